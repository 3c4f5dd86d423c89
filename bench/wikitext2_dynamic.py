"""The dynamic-evaluation figures on WikiText-2 (docs/benchmarks/dynamic.md): a model trained
with elman train's defaults on the first 90% of WikiText-2's valid text
(split at a line boundary), validated on the rest, then evaluated on its
test text statically and with `elman eval --dynamic` at each rate given.
A benchmark, not a test: it prints and records what it measured.

    .venv/bin/python bench/wikitext2_dynamic.py --out DIR [--dynamic 0.1,0.05] [--data ../shared/data/wikitext-2]

The training text is small (about 190k tokens), so this measures how much
dynamic evaluation adds when the model has seen little of the domain, on
text (Wikipedia articles) unlike KJV's verses.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import dynamic_flags, elman  # noqa: E402  (one process per command, timed)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2"


def split(valid: Path, out: Path, share: float = 0.9) -> dict:
    """train.txt: the lines holding the first ``share`` of valid's tokens; valid.txt: the rest."""
    lines = valid.read_text(encoding="utf-8").splitlines(keepends=True)
    total = sum(len(line.split()) for line in lines)
    seen, cut = 0, len(lines)
    for i, line in enumerate(lines):
        if seen >= share * total:
            cut = i
            break
        seen += len(line.split())
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.txt").write_text("".join(lines[:cut]), encoding="utf-8")
    (out / "valid.txt").write_text("".join(lines[cut:]), encoding="utf-8")
    return {"train_tokens": seen, "valid_tokens": total - seen, "train_lines": cut}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--data", type=Path, default=SHARED, help="the directory holding WikiText-2's valid.txt and test.txt")
    ap.add_argument("--dynamic", default="default", help="dynamic rates, comma-separated ('default': eval's own)")
    ap.add_argument("--bptt", help="with --dynamic: the segment length (default: the model's)")
    ap.add_argument("train_flags", nargs=argparse.REMAINDER, help="after --: more elman train flags")
    args = ap.parse_args()
    if not (args.data / "valid.txt").is_file() or not (args.data / "test.txt").is_file():
        ap.error(f"{args.data}: no valid.txt and test.txt of WikiText-2 there")
    corpus = args.out / "corpus"
    row = split(args.data / "valid.txt", corpus)
    flags = [f for f in args.train_flags if f != "--"]
    _, wall = elman("train", "--train", str(corpus / "train.txt"), "--valid", str(corpus / "valid.txt"),
                    "--out", str(args.out / "model"), "--force", "--quiet", *flags)
    progress = json.loads((args.out / "model" / "last" / "config.json").read_text())["train_state"]["progress"]
    vocab = (args.out / "model" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    row.update(flags=" ".join(flags), train_wall_s=round(wall, 1), epochs=progress["epoch"] - 1,
               vocab=len(vocab))
    test = str(args.data / "test.txt")
    for lr in [None, *[x for x in args.dynamic.split(",") if x]]:
        extra = [] if lr is None else dynamic_flags(lr) + (["--bptt", args.bptt] if args.bptt else [])
        stdout, seconds = elman("eval", "--model", str(args.out / "model"), "--data", test, "--json", *extra)
        key = "test_ppl" if lr is None else f"test_ppl_dynamic_{lr}"
        row[key], row[key.replace("ppl", "seconds")] = round(json.loads(stdout)["perplexity"], 2), round(seconds, 1)
    print(json.dumps(row))
    with open(args.out / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
