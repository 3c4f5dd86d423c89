"""The figures of docs/benchmarks/rescoring.md: n-best scoring speed against eval's,
and perplexities on the KJV test text interpolated with an n-gram model.
A benchmark, not a test: it prints what it measured.

    .venv/bin/python bench/rescoring.py --model DIR [--hyps 100000] [--per-utterance 100] [--rounds 2]

The n-gram model is the tests' own trigram (``tests/helpers.py``: backoff
with absolute discounting, written as ARPA, queried with KenLM), built from
the KJV training text: elman ships no n-gram model and KenLM's Python
package cannot build one. The n-best list is synthetic: each test verse,
then hypotheses made from it by random substitutions, deletions and
insertions of vocabulary words (what a recogniser's n-best list looks like
to a language model: near-copies of one sentence).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import helpers  # noqa: E402  (the ARPA writer)

from elman import cli  # noqa: E402
from elman.data.kjv import build_kjv_corpus  # noqa: E402


def run(*argv) -> tuple[str, str, float]:
    """cli.main in this process; (stdout, stderr, seconds)."""
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in argv])
    seconds = time.perf_counter() - start
    if rc:
        raise SystemExit(f"{argv}: exit {rc}: {err.getvalue()}")
    return out.getvalue(), err.getvalue(), seconds


def nbest_list(verses, vocab_words, hyps: int, per_utterance: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(hyps // per_utterance):
        words = verses[u % len(verses)].split()
        for k in range(per_utterance):
            hyp = list(words)
            for _ in range(int(rng.integers(0, 4)) if k else 0):      # the first hypothesis: the verse itself
                at, what = int(rng.integers(len(hyp) + 1)), rng.integers(3)
                if what == 0 and at < len(hyp):
                    hyp[at] = str(rng.choice(vocab_words))
                elif what == 1 and at < len(hyp) and len(hyp) > 1:
                    del hyp[at]
                else:
                    hyp.insert(at, str(rng.choice(vocab_words)))
            lines.append(f"utt{u:05d} " + " ".join(hyp))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--hyps", type=int, default=100_000)
    ap.add_argument("--per-utterance", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--order", type=int, default=3)
    args = ap.parse_args()
    corpus = build_kjv_corpus()
    tmp = Path(tempfile.mkdtemp(prefix="elman-rescoring-"))
    print(f"load: {os.getloadavg()}")

    start = time.perf_counter()
    sentences = [line.split() for line in corpus["train"].read_text().splitlines() if line.strip()]
    helpers.write_arpa(tmp / "kjv.arpa", helpers.ngram_model(sentences, order=args.order))
    print(f"{args.order}-gram ARPA from {len(sentences)} training verses: {time.perf_counter() - start:.1f} s, "
          f"{(tmp / 'kjv.arpa').stat().st_size / 2**20:.1f} MiB")

    test, valid = corpus["test"], corpus["valid"]
    rnn = json.loads(run("eval", "--model", args.model, "--data", test, "--json")[0])
    mixed, said, _ = run("eval", "--model", args.model, "--data", test, "--ngram", tmp / "kjv.arpa",
                         "--lambda", "auto", "--heldout", valid, "--json")
    mixed = json.loads(mixed)
    print(said.strip())
    print(f"KJV test: elman {rnn['perplexity']:.2f}, {args.order}-gram {mixed['other_perplexity']:.2f}, "
          f"interpolated (lambda {mixed['lambda']:.3f} fitted on valid) {mixed['perplexity']:.2f}; "
          f"{mixed['tokens']} tokens")
    for lam in (0.5, 0.75):
        r = json.loads(run("eval", "--model", args.model, "--data", test, "--ngram", tmp / "kjv.arpa",
                           "--lambda", lam, "--json")[0])
        print(f"  lambda {lam}: {r['perplexity']:.2f}")

    vocab = (Path(args.model) / "vocab.txt").read_text().split("\n")[:-1]
    verses = [v for v in test.read_text().splitlines() if v.strip()]
    (tmp / "nbest.txt").write_text(nbest_list(verses, vocab[:2000], args.hyps, args.per_utterance))
    print(f"n-best list: {args.hyps} hypotheses, {args.hyps // args.per_utterance} utterances")
    times = {}
    for r in range(args.rounds):                  # alternated, so that load changes hit each alike
        for name, argv in [("eval (one stream)", ["eval", "--data", test, "--json"]),
                           ("score --nbest", ["score", "--nbest", "--data", tmp / "nbest.txt", "--json"]),
                           ("score --nbest --carry", ["score", "--nbest", "--carry", "--data", tmp / "nbest.txt",
                                                      "--json"]),
                           ("score --nbest + 3-gram", ["score", "--nbest", "--data", tmp / "nbest.txt", "--json",
                                                       "--ngram", tmp / "kjv.arpa", "--lambda", "0.5"])]:
            out, _, seconds = run(argv[0], "--model", args.model, *argv[1:])
            tokens = json.loads(out.splitlines()[-1])["tokens"]
            times.setdefault(name, []).append((tokens, seconds))
    print(f"load: {os.getloadavg()}")
    base = np.median([t / s for t, s in times["eval (one stream)"]])
    for name, runs in times.items():
        rate = np.median([t / s for t, s in runs])
        print(f"| {name} | {runs[0][0]:,} | {np.median([s for _, s in runs]):.1f} s | {rate:,.0f} | "
              f"{rate / base:.2f}x |")


if __name__ == "__main__":
    main()
