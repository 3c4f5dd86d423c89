"""The ablation of elman train's (docs/benchmarks/recipes.md)
defaults, one row a run, each trained alone with `elman train` on the
demo's KJV split and then evaluated on its test text, statically and with
`elman eval --dynamic` at the default rate. A benchmark, not a test: it
prints and records what it measured.

    .venv/bin/python bench/recipes.py --out DIR [ROW ...]            # rows of ROWS; default: all
    .venv/bin/python bench/recipes.py --out DIR recipe@3.1          # a row with --minutes 3.1

Each row's wall time is `elman train`'s (a process of its own, from start to
exit: reading the corpus, every epoch's validation and the test included).
The results go, a JSON line a row, to DIR/results.jsonl (appended).
Run nothing else on the machine meanwhile: the times are the point.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from elman.data.kjv import build_kjv_corpus

# Each row: elman train's defaults with one ingredient changed (the flags).
ROWS = {
    "recipe": [],
    "no-direct": ["--direct", "0"],
    "no-anneal": ["--anneal", "0"],
    "no-dropout": ["--dropout", "0"],
    "full-softmax": ["--sampled", "0"],
    "direct-lr-0.1": ["--direct-lr", "0.1"],
    "direct-8-order-4": ["--direct", "8", "--direct-order", "4"],
    "classes-100": ["--classes", "100"],
    # the plain model with sampled softmax and dropout: 20 epochs, no direct connections, no annealing
    "old": ["--direct", "0", "--anneal", "0", "--epochs", "20"],
    "old-defaults": ["--direct", "0", "--anneal", "0", "--epochs", "20", "--sampled", "0", "--dropout", "0"],
}


def elman(*argv) -> tuple[str, float]:
    """The elman beside this interpreter, as a process; (stdout, seconds)."""
    exe = Path(sys.executable).with_name("elman")
    start = time.perf_counter()
    done = subprocess.run([str(exe), *argv], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"elman {' '.join(argv)} failed:\n{done.stderr}")
    return done.stdout, seconds


def dynamic_flags(lr: str) -> list[str]:
    """``elman eval``'s flags for one rate of ``--dynamic``: 'default' gives eval's own."""
    return ["--dynamic", *([] if lr == "default" else [lr])]


def measure(name: str, out: Path, files: dict, dynamic: list[str]) -> dict:
    base, _, minutes = name.partition("@")
    flags = ROWS[base] + (["--minutes", minutes] if minutes else [])
    model = out / name
    _, wall = elman("train", "--train", str(files["train"].parent), "--out", str(model), "--force", "--quiet",
                    *flags)
    progress = json.loads((model / "last" / "config.json").read_text())["train_state"]["progress"]
    row = {"row": name, "flags": " ".join(flags), "train_wall_s": round(wall, 1),
           "epochs": progress["epoch"] - 1 + (progress["windows_done"] > 0), "stopped": progress["stopped"],
           "load_before": os.getloadavg()[0]}
    for lr in [None, *dynamic]:
        argv = ["eval", "--model", str(model), "--data", str(files["test"]), "--json"]
        stdout, seconds = elman(*argv, *(dynamic_flags(lr) if lr else []))
        key = "test_ppl" if lr is None else f"test_ppl_dynamic_{lr}"
        row[key] = round(json.loads(stdout)["perplexity"], 2)
        row[key.replace("ppl", "seconds")] = round(seconds, 1)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", nargs="*", help=f"rows to run (default all): {', '.join(ROWS)}; NAME@M: --minutes M")
    ap.add_argument("--out", required=True, type=Path, help="where the models and results.jsonl go")
    ap.add_argument("--dynamic", default="default", help="dynamic rates to evaluate with, comma-separated "
                                                          "('default': eval's own)")
    args = ap.parse_args()
    for name in args.rows:
        if name.partition("@")[0] not in ROWS:
            ap.error(f"no row {name!r}: the rows are {', '.join(ROWS)}")
    files = build_kjv_corpus()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.rows or list(ROWS):
        row = measure(name, args.out, files, [lr for lr in args.dynamic.split(",") if lr])
        print(json.dumps(row), flush=True)
        with open(args.out / "results.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
