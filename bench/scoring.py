"""Scoring speed: `elman eval` (static and `--dynamic`) beside Mikolov's
RNNLM `-test` (and `-dynamic 0.1`) on the same files, and elman's scoring
at V = 800k on Zipf text. A benchmark, not a test: it prints and records.

    .venv/bin/python bench/scoring.py --out DIR --static FILE --dynamic FILE \\
        --elman NAME=MODEL_DIR ... [--rnnlm NAME=MODEL_FILE ...] [--pin] [--v800k] [--score] [--modes [ARPA]]

Each command is a process of its own; its wall time and its CPU time
(user + system, of the process and its threads) are recorded, and words/s
of both (tokens: each line's words and its end of line, as both toolkits
count them). ``--pin``: every command on core 0 with one thread
(`taskset -c 0`, ELMAN_THREADS=1, OPENBLAS_NUM_THREADS=1): on a busy
machine its CPU time is the figure that compares; otherwise elman uses
every core (its recurrence beside its output layer) and RNNLM its one.
Results go, a JSON line a measurement, to DIR/results.jsonl (appended).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ONE_CORE = {"ELMAN_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def tokens(path: Path) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(len(line.split()) + 1 for line in f)


def timed(argv: list, pin: bool, cwd=None) -> dict:
    """Run argv; its stdout, wall seconds and CPU seconds (its own, children's rusage)."""
    env = dict(os.environ, **(ONE_CORE if pin else {}))
    argv = (["taskset", "-c", "0"] if pin else []) + argv
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"stdout": done.stdout, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def elman_eval(model: str, data: Path, dynamic: bool, pin: bool) -> dict:
    exe = str(Path(sys.executable).with_name("elman"))
    r = timed([exe, "eval", "--model", model, "--data", str(data), "--json", *(["--dynamic"] if dynamic else [])], pin)
    r["ppl"] = round(json.loads(r.pop("stdout"))["perplexity"], 2)
    return r


def elman_score_dynamic(model: str, data: Path, pin: bool) -> dict:
    """`elman score --dynamic`: each line from h0 = 0, one step per line once scored."""
    exe = str(Path(sys.executable).with_name("elman"))
    r = timed([exe, "score", "--dynamic", "--model", model, "--data", str(data)], pin)
    r["ppl"] = round(float(r.pop("stdout").strip().splitlines()[-1].split()[-1]), 2)
    return r


def score_modes(ngram: str | None) -> list:
    """(name, extra arguments) of each way ``elman score`` runs a text; with ``ngram``
    (an ARPA file or KenLM binary) the interpolating ones too (λ = 0.5)."""
    mix = ["--ngram", ngram, "--lambda", "0.5"] if ngram else None
    modes = [("score", []), ("score --carry", ["--carry"]), ("score --per-token", ["--per-token", "PT"])]
    if mix:
        modes += [("score --ngram", mix), ("score --carry --ngram", ["--carry", *mix]),
                  ("score --per-token --ngram", ["--per-token", "PT", *mix])]
    return modes


def elman_score(model: str, data: Path, extra: list, pin: bool, out: Path) -> dict:
    """`elman score` of ``data``, its lines' scores to /dev/null (a --per-token file under ``out``)."""
    exe = str(Path(sys.executable).with_name("elman"))
    extra = [str(out / "per-token.txt") if a == "PT" else a for a in extra]
    r = timed([exe, "score", "--model", model, "--data", str(data), *extra], pin)
    r["ppl"] = round(float(r.pop("stdout").strip().splitlines()[-1].split()[5]), 2)
    return r


def rnnlm_eval(binary: str, model: str, data: Path, dynamic: bool, pin: bool, cwd: Path) -> dict:
    r = timed([binary, "-rnnlm", model, "-test", str(data), *(["-dynamic", "0.1"] if dynamic else [])], pin, cwd)
    ppl = [line.split()[-1] for line in r.pop("stdout").splitlines() if line.startswith("PPL net")]
    r["ppl"] = round(float(ppl[-1]), 2)
    return r


def v800k(pin: bool, n: int = 200_000) -> dict:
    """The default recipe's model at V = 800k (random weights: speed needs no training), scoring
    ``n`` Zipf tokens as one stream, in a process of its own; words/s and peak RSS."""
    code = f"""
import json, resource, time, numpy as np
from elman.bench.zipf import zipf_counts
from elman.core.params import Params
from elman.model.perplexity import perplexity
from elman.training.state import Settings, default_classes
V = 800_000
s = Settings(train="", valid=""); s.fit_vocabulary(V)
counts = zipf_counts(V)
p = Params.init(V, s.embed, s.hidden, classes=s.classes, counts=counts, direct=s.direct_size, direct_order=s.direct_order)
ids = np.random.default_rng(0).choice(V, size={n}, p=counts / counts.sum())
perplexity(p, ids[:5000], 0)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0, c0 = time.perf_counter(), time.process_time()
perplexity(p, ids, 0)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps(dict(V=V, classes=s.classes, direct=s.direct_size, tokens={n}, wall_s=round(wall, 2),
                      cpu_s=round(cpu, 2), words_per_s=round({n} / wall), words_per_cpu_s=round({n} / cpu),
                      maxrss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))))
"""
    r = timed([sys.executable, "-c", code], pin)
    return json.loads(r["stdout"])


def _row(r: dict, name: str, mode: str, data: Path, n: int, pin: bool) -> dict:
    """A measurement with what it measured and its words/s, printed as it comes."""
    r.update(system=name, mode=mode, data=str(data), tokens=n, pinned=pin,
             words_per_s=round(n / r["wall_s"]), words_per_cpu_s=round(n / r["cpu_s"]))
    print(json.dumps(r), flush=True)
    return r


def warm(paths) -> None:
    """Read every file of the models and texts once, untimed: each system's
    first run then reads them from the page cache as its later runs do (a
    model just written may have left it: on 2026-12-06, a 2-core Xeon VM,
    the first `elman eval` of the KJV training text with a just-trained 80 MB
    model took 4.67 s, the runs after it 3.09 s)."""
    for path in filter(None, paths):
        path = Path(path)
        for f in ([path] if path.is_file() else sorted(path.glob("*")) if path.is_dir() else []):
            if f.is_file():
                with open(f, "rb") as fh:
                    while fh.read(1 << 24):
                        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--static", type=Path, help="text for the static figures (e.g. KJV's train.txt, 860k tokens)")
    ap.add_argument("--dynamic", type=Path, help="text for dynamic evaluation (e.g. KJV's test.txt)")
    ap.add_argument("--elman", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--rnnlm", action="append", default=[], metavar="NAME=FILE")
    ap.add_argument("--rnnlm-bin", default="/work/peers/bin/rnnlm")
    ap.add_argument("--pin", action="store_true", help="one core, one thread (see the module's docstring)")
    ap.add_argument("--v800k", action="store_true", help="also the default recipe's scoring at V = 800k")
    ap.add_argument("--score", action="store_true", help="also `elman score --dynamic` of the --dynamic text")
    ap.add_argument("--modes", nargs="?", const="", metavar="NGRAM",
                    help="also `elman score` of the --static text: plain, --carry, --per-token, and with an n-gram "
                         "model (ARPA or KenLM binary) --ngram, --carry --ngram, --per-token --ngram")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    warm([Path(s.split("=", 1)[1]) for s in args.elman + args.rnnlm] + [args.static, args.dynamic, args.modes])
    rows = []
    for mode, data in (("static", args.static), ("dynamic", args.dynamic)):
        if data is None:
            continue
        n = tokens(data)
        for kind, specs in (("elman", args.elman), ("rnnlm", args.rnnlm)):
            for name, path in (s.split("=", 1) for s in specs):
                r = (elman_eval(path, data, mode == "dynamic", args.pin) if kind == "elman" else
                     rnnlm_eval(args.rnnlm_bin, path, data, mode == "dynamic", args.pin, args.out))
                rows.append(_row(r, name, mode, data, n, args.pin))
    for name, path in (s.split("=", 1) for s in args.elman if args.score and args.dynamic):
        r = elman_score_dynamic(path, args.dynamic, args.pin)
        rows.append(_row(r, name, "score --dynamic", args.dynamic, tokens(args.dynamic), args.pin))
    for name, path in (s.split("=", 1) for s in args.elman if args.modes is not None and args.static):
        for mode, extra in score_modes(args.modes or None):
            r = elman_score(path, args.static, extra, args.pin, args.out)
            rows.append(_row(r, name, mode, args.static, tokens(args.static), args.pin))
    if args.v800k:
        r = dict(v800k(args.pin), system="elman defaults V=800k", mode="static", pinned=args.pin)
        rows.append(r)
        print(json.dumps(r), flush=True)
    with open(args.out / "results.jsonl", "a") as f:
        for r in rows:
            f.write(json.dumps(dict(r, load=os.getloadavg()[0], date=time.strftime("%Y-%m-%d %H:%M"))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
