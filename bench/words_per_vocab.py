"""Training words/s against vocabulary size: `elman bench` at each V with the
full, class (K = round(sqrt(V))) and sampled (S = 1000) softmax, d = Dh = 200,
B = 32, T = 20. A benchmark, not a test.

    python bench/words_per_vocab.py run  [--V 1000,3000,10000,30000,100000] [--steps 3 --rounds 3] [--lock FILE]
    python bench/words_per_vocab.py plot [--caption TEXT]

`run` appends one row per (V, implementation, mode) to
docs/benchmarks/data/words_per_vocab.csv (replacing the rows of the same V),
with the date, the machine's load average when the bench started, and the
matmul peak `elman bench` measured in the same run; `plot` draws training
words/s against V on log-log axes to docs/benchmarks/img/words_per_vocab.svg.
With `--lock FILE` the sweep holds an exclusive lock on FILE.
"""
from __future__ import annotations

import csv
import datetime
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from learning_curves import held, parsers, replace_rows, save

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "docs" / "benchmarks" / "data" / "words_per_vocab.csv"
SVG = ROOT / "docs" / "benchmarks" / "img" / "words_per_vocab.svg"
FIELDS = ["date", "load1", "V", "impl", "mode", "words_per_s", "gflops", "peak_gflops", "blas"]


def bench(V: int, steps: int, rounds: int) -> dict:
    argv = [sys.executable, "-m", "elman", "bench", "--V", str(V), "--classes", str(round(math.sqrt(V))),
            "--sampled", "1000", "--steps", str(steps), "--rounds", str(rounds), "--json"]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def run(vs: list[int], steps: int, rounds: int, lock: str | None, path: Path) -> None:
    """One bench per V, all under one hold of the lock; the CSV rewritten after each."""
    with held(lock):
        for V in vs:
            load1 = os.getloadavg()[0]
            result = bench(V, steps, rounds)
            rows = [{"date": datetime.date.today().isoformat(), "load1": f"{load1:.1f}", "V": V,
                     "impl": r["impl"], "mode": r["mode"], "words_per_s": f"{r['words_per_s']:.0f}",
                     "gflops": f"{r['gflops']:.1f}", "peak_gflops": f"{result['peak_gflops']:.0f}",
                     "blas": result["blas"]} for r in result["rows"]]
            replace_rows(path, FIELDS, rows, lambda r, V=V: int(r["V"]) != V)
            print(V, load1, [(r["impl"], r["mode"], r["words_per_s"]) for r in rows], flush=True)


def plot(path: Path, out: Path, caption: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["mode"] == "train"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for impl in dict.fromkeys(r["impl"] for r in rows):
        mine = sorted((int(r["V"]), float(r["words_per_s"])) for r in rows if r["impl"] == impl)
        ax.plot(*zip(*mine), "o-", markersize=4, label=impl.replace("elman ", ""))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("vocabulary size V")
    ax.set_ylabel("training words/s")
    ax.grid(alpha=0.3, which="both")
    ax.legend(title="output layer")
    ax.set_title("elman bench, d = Dh = 200, B = 32, T = 20 (classes: K = √V; sampled: S = 1000)", fontsize=9)
    save(fig, out, caption)


def main(argv=None) -> None:
    ap, r = parsers(__doc__, CSV, SVG)
    r.add_argument("--V", default="1000,3000,10000,30000,100000")
    r.add_argument("--steps", type=int, default=3)
    r.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    if a.cmd == "plot":
        return plot(a.csv, a.out, a.caption)
    run([int(v) for v in a.V.split(",")], a.steps, a.rounds, a.lock, a.csv)


if __name__ == "__main__":
    main()
