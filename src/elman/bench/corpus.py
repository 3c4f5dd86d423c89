"""``elman bench --corpus 10M,100M``: corpora of any size, measured.

For each size, a synthetic corpus (Zipf-distributed random words, 5-40 a
line; made once under ``--corpus-dir``, outside the repository) is read by
``elman train`` (d = Dh = 200, at most 10,000 words, B = 32, T = 20) in a
fresh process, which reports when its first training window is done and
exits there:

* cold: no token-id cache yet (the corpus text itself may be in the page
  cache, as on any second use of a file): counting, tokenising, caching;
* warm: the second run, the cache in place;
* ``--compare-src DIR`` runs the same with another elman's source tree
  (e.g. a checkout of the commit before the cache), once: it has no cache.

Time to the first batch is wall time from starting the process (the
interpreter and its imports included) to the end of the first window's
update; peak RSS is the process's high-water mark at that moment
(``ru_maxrss``), and CPU time its user + system seconds; the tokeniser's
worker processes report theirs apart (on a busy machine the CPU seconds
say more than the wall time).
A last run sweeps one whole epoch of training windows (no model) from the
cache, with and without handing back the pages behind it, to show what the
memory map costs over an epoch.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from elman import progress

GENERATOR = 2             # bump when the synthetic text changes
TYPES = 50_000            # distinct words of the synthetic language
MODEL = ["--hidden", "200", "--embed", "200", "--max-vocab", "10000", "--batch", "32", "--bptt", "20"]

# Runs in the measured process, with either elman on its path: the first
# window's update ends the run and reports the time and peak memory.
DRIVER = """
import json, os, resource, sys, time
from elman import cli
from elman.training import train as T
real = T.bptt
def first(*a, **k):
    out = real(*a, **k)
    use = resource.getrusage
    cpu = lambda u: u.ru_utime + u.ru_stime
    me, kids = use(resource.RUSAGE_SELF), use(resource.RUSAGE_CHILDREN)
    print("FIRST " + json.dumps({"at": time.time(), "rss": me.ru_maxrss * 1024, "workers_rss": kids.ru_maxrss * 1024,
                                 "cpu": cpu(me), "workers_cpu": cpu(kids)}), flush=True)
    os._exit(0)
T.bptt = first
sys.exit(cli.main(sys.argv[1:]))
"""

SWEEP = """
import json, resource, sys, time
from elman.data import Streams, corpus_ids
vocab, ids = corpus_ids(sys.argv[1], max_vocab=10000, cache_dir=sys.argv[2])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t = time.perf_counter()
streams = Streams(ids.ids, 32, ids.release if sys.argv[3] == "release" else None)
total = sum(int(x[0, 0]) for _, x, _ in streams.windows(20))
print(json.dumps({"seconds": time.perf_counter() - t, "rss_before": base,
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgG]?)", text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a token count (e.g. 10M)")
    return int(float(m.group(1)) * {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[m.group(2).lower()])


def synthetic_corpus(path: Path, tokens: int, seed: int = 0) -> Path:
    """A corpus of about ``tokens`` tokens (``<eos>`` included) at ``path``,
    made once: a sidecar ``.json`` says what it holds, and is written last."""
    meta = {"generator": GENERATOR, "tokens": tokens, "seed": seed, "types": TYPES}
    side = path.with_suffix(".json")
    if path.exists() and side.exists() and json.loads(side.read_text()) == meta:
        return path
    language = np.random.default_rng(0)  # one language for every seed: a validation file shares its words
    lengths = language.integers(2, 10, TYPES)
    letters = language.integers(97, 123, lengths.sum()).astype(np.uint8).tobytes().decode()
    rng = np.random.default_rng(seed)
    words = np.array([letters[a - n:a] for a, n in zip(np.cumsum(lengths), lengths)], dtype=object)
    cdf = np.cumsum(1.0 / np.arange(1, TYPES + 1) ** 1.05)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        done = 0
        while done < tokens:
            n = min(1 << 20, max(1, round((tokens - done) * 22.5 / 23.5)))  # words; lines average 22.5 + <eos>
            ws = words[np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1]), TYPES - 1)].tolist()
            ends = np.cumsum(rng.integers(5, 41, n // 5 + 2))
            cuts = [0, *ends[ends < n].tolist(), n]
            lines = [" ".join(ws[a:b]) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
            f.write("\n".join(lines) + "\n")
            done += n + len(lines)
    os.replace(tmp, path)
    side.write_text(json.dumps(meta))
    return path


def _run(code: str, args: list[str], src: str) -> tuple[dict, str, float]:
    """Run ``code`` in a fresh interpreter with ``src`` first on its path:
    (its FIRST report or JSON line, its stderr, the start time)."""
    env = {**os.environ, "PYTHONPATH": src}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark run failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return json.loads(lines[-1].removeprefix("FIRST ")), proc.stderr, t0


def first_batch(train: Path, valid: Path, out: Path, src: str, cache_dir: Path | None) -> dict:
    args = ["train", "--train", str(train), "--valid", str(valid), "--out", str(out), "--force", *MODEL]
    args += ["--cache-dir", str(cache_dir)] if cache_dir is not None else []
    report, err, t0 = _run(DRIVER, args, src)
    built = re.search(r"token ids of .*?: ([\d,]+) tokenised in [\d.]+ s \(([\d.]+)M tokens/s\)", err)
    return {"seconds": report["at"] - t0, "rss_mb": report["rss"] / 1e6, "workers_rss_mb": report["workers_rss"] / 1e6,
            "cpu_s": report["cpu"], "workers_cpu_s": report["workers_cpu"],
            "build_mtok_s": float(built.group(2)) if built else None}


def bench_size(tokens: int, root: Path, compare_src: str | None) -> dict:
    from elman.data import cache as cache_module
    here = str(Path(__file__).resolve().parents[2])
    train = synthetic_corpus(root / f"train-{tokens}.txt", tokens)
    valid = synthetic_corpus(root / "valid-2000.txt", 2000, seed=1)
    cache_dir = root / f"cache-{tokens}"
    cache_module.clear(cache_dir)
    row = {"tokens": tokens, "bytes": train.stat().st_size,
           "cold": first_batch(train, valid, root / "run", here, cache_dir),
           "warm": first_batch(train, valid, root / "run", here, cache_dir)}
    row["cache_bytes"] = sum(p.stat().st_size for p in cache_dir.iterdir() if not p.name.startswith("."))
    for mode in ("release", "keep"):
        row[f"sweep_{mode}"] = _run(SWEEP, [str(train), str(cache_dir), mode], here)[0]
    if compare_src:
        row["compare"] = first_batch(train, valid, root / "run-compare", compare_src, None)
    return row


def bench_corpus(sizes: list[int], root, compare_src: str | None = None) -> dict:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    sizes = progress.track(sizes, "bench --corpus", "tokens", sum(sizes), count=lambda n: n)
    return {"load": os.getloadavg(), "cpus": os.cpu_count(), "compare_src": compare_src,
            "rows": [bench_size(n, root, compare_src) for n in sizes]}


def format_report(res: dict) -> str:
    lines = [f"elman bench --corpus: {res['cpus']} CPUs, load average at start {res['load'][0]:.1f}; "
             f"train d=Dh=200, V<=10k, B=32, T=20; first batch = process start to the first update",
             f"{'tokens':>12} {'code':>8} {'build Mtok/s':>13} {'1st batch s':>12} {'CPU s (+workers)':>17} "
             f"{'peak RSS MB':>12} {'workers MB':>11} {'epoch sweep RSS MB (released / kept)':>38}"]
    for r in res["rows"]:
        sweep = (f"{r['sweep_release']['rss'] / 1e6:8.0f} / {r['sweep_keep']['rss'] / 1e6:.0f} "
                 f"({r['sweep_release']['seconds']:.1f} s)")
        for name, run in (("cold", r["cold"]), ("warm", r["warm"]), ("compare", r.get("compare"))):
            if run is None:
                continue
            build = f"{run['build_mtok_s']:.1f}" if run.get("build_mtok_s") else "-"
            cpu = f"{run['cpu_s']:.1f} + {run['workers_cpu_s']:.1f}"
            lines.append(f"{r['tokens']:>12,} {name:>8} {build:>13} {run['seconds']:>12.1f} {cpu:>17} "
                         f"{run['rss_mb']:>12.0f} {run['workers_rss_mb']:>11.0f} {sweep if name == 'warm' else '':>38}")
        lines.append(f"{'':>12} corpus {r['bytes'] / 1e6:.0f} MB, cache {r['cache_bytes'] / 1e6:.0f} MB "
                     f"({r['cache_bytes'] / r['tokens']:.2f} bytes/token)")
    return "\n".join(lines)
