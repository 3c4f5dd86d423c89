"""N-best scoring speed: `elman score --nbest` of two source trees (e.g.
before and after a change) on n-best lists made from KJV test verses. A
benchmark, not a test: it prints and records.

    .venv/bin/python bench/nbest.py --model DIR --out DIR --src NAME=SRC_DIR ... \\
        [--per-utterance 100,1000] [--hyps 20000] [--pin] [--rounds 1]

The lists are synthetic, made like a recogniser's: utterance u is a test
verse of at least 8 words; its first hypothesis is the verse, each other
one the verse with 1 to 4 words replaced by confusable ones (vocabulary
words of the same first letter and about the same length, at most two
edits away, else any of the 2,000 most frequent), at positions drawn from
the last two thirds of the verse, so hypotheses share prefixes as an
n-best list's near-copies of one sentence do. Hypotheses of an utterance
are distinct. Each command is a process of its own (its start-up, about a
second, included; it is timed on its own on a one-line list), timed by ``scoring.timed``: wall seconds and CPU
seconds; ``--pin``: on core 0 with one thread. words/s counts each
hypothesis's words and its end of line. The scores of every tree are
compared: the largest difference of a hypothesis's log10 probability.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from edits import distance   # bench/edits.py
from scoring import timed   # bench/scoring.py: wall and CPU seconds of a command

KJV = Path.home() / ".cache/elman/kjv-ptb-1"


class Confusions:
    """Words a recogniser might put for a word: same first letter, length
    within one, at most two edits away."""

    def __init__(self, vocab: list):
        self.frequent = vocab[:2000]
        self.buckets = {}
        for w in vocab:
            if not w.startswith("<"):
                self.buckets.setdefault((w[0], len(w)), []).append(w)

    @lru_cache(maxsize=None)
    def of(self, word: str) -> tuple:
        near = [w for n in (len(word) - 1, len(word), len(word) + 1) for w in self.buckets.get((word[:1], n), ())
                if w != word and distance(w, word) <= 2]
        return tuple(near) or tuple(w for w in self.frequent[:200] if w != word)


def nbest_list(verses: list, conf: Confusions, utterances: int, per: int, seed: int = 0) -> list:
    """Lines 'uttNNNNN hypothesis' (see the module's docstring)."""
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(utterances):
        words = verses[u % len(verses)]
        hyps, tries = {tuple(words)}, 0
        while len(hyps) < per and tries < 50 * per:
            tries += 1
            hyp = list(words)
            for _ in range(1 + min(3, int(rng.geometric(0.5)) - 1)):
                at = int(rng.integers(len(words) // 3, len(words)))
                near = conf.of(words[at])
                hyp[at] = near[int(rng.integers(len(near)))]
            hyps.add(tuple(hyp))
        ordered = [tuple(words)] + sorted(hyps - {tuple(words)}, key=lambda h: rng.random())
        lines += [f"utt{u:05d} " + " ".join(h) for h in ordered[:per]]
    return lines


def shared(lines: list) -> tuple[int, int]:
    """(positions, distinct prefixes of one utterance): what the trie computes against each alone."""
    positions, prefixes = 0, set()
    for line in lines:
        uid, *words = line.split()
        words.append("</s>")
        positions += len(words)
        prefixes.update((uid, tuple(words[:k])) for k in range(1, len(words) + 1))
    return positions, len(prefixes)


def score(src: str, model: str, data: Path, carry: bool, pin: bool) -> dict:
    os.environ["PYTHONPATH"] = src
    exe = str(Path(sys.executable).with_name("elman"))
    r = timed([exe, "score", "--model", model, "--data", str(data), "--nbest", *(["--carry"] if carry else [])], pin)
    r["scores"] = np.array([float(x) for x in r.pop("stdout").splitlines()[:-1]])
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--src", action="append", required=True, metavar="NAME=DIR", help="a source tree (DIR/elman)")
    ap.add_argument("--per-utterance", default="100,1000")
    ap.add_argument("--hyps", type=int, default=20_000, help="hypotheses in each list")
    ap.add_argument("--carry", action="store_true", help="score with --carry")
    ap.add_argument("--pin", action="store_true", help="one core, one thread, CPU time")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    vocab = (Path(args.model) / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    verses = [v.split() for v in (KJV / "test.txt").read_text(encoding="utf-8").splitlines() if len(v.split()) >= 8]
    conf = Confusions(vocab)
    rows, startup = [], {}
    tiny = args.out / "nbest-1.txt"
    tiny.write_text(f"utt00000 {' '.join(verses[0])}\n", encoding="utf-8")
    for name, src in (s.split("=", 1) for s in args.src):     # a warm-up (Numba's cache), then start-up
        score(src, args.model, tiny, args.carry, args.pin)
        startup[name] = score(src, args.model, tiny, args.carry, args.pin)
        print(f"{name}: start-up and one hypothesis {startup[name]['wall_s']} s wall, "
              f"{startup[name]['cpu_s']} s CPU", flush=True)
    for per in map(int, args.per_utterance.split(",")):
        data = args.out / f"nbest-{per}.txt"
        lines = nbest_list(verses, conf, max(1, args.hyps // per), per)
        data.write_text("\n".join(lines) + "\n", encoding="utf-8")
        positions, prefixes = shared(lines)
        print(f"{data}: {len(lines)} hypotheses, {per} an utterance, {positions} tokens, "
              f"{prefixes} distinct prefixes ({prefixes / positions:.3f})", flush=True)
        scores = {}
        for _ in range(args.rounds):            # alternated, so that a change of load hits each alike
            for name, src in (s.split("=", 1) for s in args.src):
                r = score(src, args.model, data, args.carry, args.pin)
                scores[name] = r.pop("scores")
                r.update(tree=name, per_utterance=per, hypotheses=len(lines), tokens=positions,
                         distinct_prefixes=prefixes, pinned=args.pin, carry=args.carry,
                         load=os.getloadavg()[0], date=time.strftime("%Y-%m-%d %H:%M"),
                         hyps_per_s=round(len(lines) / r["wall_s"]), words_per_s=round(positions / r["wall_s"]),
                         hyps_per_cpu_s=round(len(lines) / r["cpu_s"]), words_per_cpu_s=round(positions / r["cpu_s"]),
                         startup_wall_s=startup[name]["wall_s"], startup_cpu_s=startup[name]["cpu_s"])
                rows.append(r)
                print(json.dumps(r), flush=True)
        first = next(iter(scores.values()))
        for name, s in scores.items():
            print(f"  {name}: max |log10 P - first tree's| = {np.max(np.abs(s - first)):.2g}")
    with open(args.out / "results.jsonl", "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
