"""The lattice-rescoring experiment of docs/guides/lattices.md: word error
rate of the 1-best under the n-gram model alone, elman alone and the two
interpolated, with --max-history 3, 4 and exact expansion; and the
rescoring speed. A benchmark, not a test: it prints what it measured.

    .venv/bin/python bench/lattice_wer.py --model DIR [--utterances 200] [--max-arcs 20000] [--out bench/out/lattice_wer]

The lattices are made here, from KJV test verses of 4 to 20 tokens, as a
recogniser with a trigram model would leave them: each word of the verse is a slot; at a
confusable slot (half of them) one to three words that look alike (same
first two letters, length within one) compete with it, now and then a
deletion too; acoustic scores are drawn so that the right word is better
on average (by 0.3, σ 1 each) but loses about four in ten of its contests; the lattice is
then expanded to the trigram's histories and each link gets the trigram's
ln P as its l= (and ln P(</s>) on the links into the end), so its own
1-best is the trigram's decision. The trigram is the tests' (backoff with
absolute discounting, tests/helpers.py) built from the KJV training text;
KenLM's Python package queries it.
"""
from __future__ import annotations

import argparse
import gzip
import math
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from edits import distance   # bench/edits.py

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import helpers  # noqa: E402  (the trigram and its ARPA writer)

from elman.lattice.expand import expand  # noqa: E402
from elman.lattice.graph import Arc, Final, Lattice  # noqa: E402
from elman.lattice import slf  # noqa: E402

KJV = Path.home() / ".cache" / "elman" / "kjv-ptb-1"
LN10 = math.log(10)


def confusions(words) -> dict:
    """word -> the words that look like it (first two letters, length within one)."""
    by = defaultdict(list)
    for w in words:
        by[w[:2]].append(w)
    return {w: [v for v in by[w[:2]] if v != w and abs(len(v) - len(w)) <= 1] for w in words}


def sausage(ref: list, alike: dict, rng) -> list:
    """[(word or None, ac)] per slot: the right word and its rivals."""
    slots = []
    for w in ref:
        alts = [(w, float(rng.normal(0.0, 1.0)))]
        rivals = alike.get(w, [])
        if rivals and rng.random() < 0.5:
            for v in rng.choice(rivals, size=min(len(rivals), int(rng.integers(1, 4))), replace=False):
                alts.append((str(v), float(rng.normal(-0.3, 1.0))))
            if rng.random() < 0.1:
                alts.append((None, float(rng.normal(-2.5, 1.0))))
        slots.append(alts)
    return slots


def trigram_lattice(name: str, slots: list, lm) -> Lattice:
    """The sausage expanded to trigram histories, l= the trigram's ln P."""
    import kenlm
    n = len(slots)
    arcs = [Arc(i, i + 1, w, ac, 0.0, 0) for i, alts in enumerate(slots) for w, ac in alts]
    raw = Lattice(name, "gen", n + 1, 0, arcs, {n: Final(0.0, 0.0, 0)}, {"format": "slf"})
    ex = expand(raw, list(range(n + 1)), max_history=2)
    state = {}
    for s, h in enumerate(ex.history):
        st, tmp = kenlm.State(), kenlm.State()
        lm.BeginSentenceWrite(st)
        for w in h:
            lm.BaseScore(st, w, tmp)
            st, tmp = tmp, st
        state[s] = st
    out, scratch = [], kenlm.State()
    for s, t, i in ex.arcs:
        a = raw.arcs[i]
        lp = lm.BaseScore(state[s], a.word, scratch) * LN10 if a.word else 0.0
        out.append(Arc(s, t, a.word, a.ac, lp, 0, []))
    end = len(ex.node)
    for f in ex.finals:                       # one end node; the links into it carry </s>
        out.append(Arc(f, end, None, 0.0, lm.BaseScore(state[f], "</s>", scratch) * LN10, 0, []))
    meta = {"format": "slf", "header": {"VERSION": "1.0", "UTTERANCE": name, "lmscale": "1.0"}, "on_links": True,
            "node_words": [None] * (end + 1), "node_extra": [[] for _ in range(end + 1)], "scale": 1.0,
            "gzip": True}
    return Lattice(name, "gen", end + 1, 0, out, {end: Final(0.0, 0.0, 0)}, meta)


def wer(ref: list, hyp: list) -> int:
    """Word errors of hyp against ref."""
    return distance(ref, hyp)


def build(out: Path, utterances: int, seed: int = 0) -> tuple:
    """The trigram (ARPA), the lattices (SLF, gzipped) and their list; returns (refs, list path, arpa)."""
    import kenlm
    out.mkdir(parents=True, exist_ok=True)
    arpa = out / "kjv3.arpa"
    train = [line.split() for line in (KJV / "train.txt").read_text().splitlines() if line.strip()]
    if not arpa.exists():
        helpers.write_arpa(arpa, helpers.ngram_model(train, order=3))
    lm = kenlm.Model(str(arpa))
    alike = confusions(sorted({w for s in train for w in s if w != "<unk>"}))
    rng = np.random.default_rng(seed)
    refs, names = {}, []
    verses = [s.split() for s in (KJV / "test.txt").read_text().splitlines() if 4 <= len(s.split()) <= 20]
    (out / "lats").mkdir(exist_ok=True)
    for k, ref in enumerate(verses[:utterances]):
        name = f"kjv{k:04d}"
        lat = trigram_lattice(name, sausage(ref, alike, rng), lm)
        (out / "lats" / f"{name}.lat.gz").write_bytes(slf.write(lat))
        refs[name] = ref
        names.append(f"lats/{name}.lat.gz")
    (out / "lattices.list").write_text("\n".join(names) + "\n")
    return refs, out / "lattices.list", arpa


def rescore(model, lattices, *options) -> tuple:
    """(best words by utterance, summary line) of one ``elman rescore`` run."""
    done = subprocess.run([sys.executable, "-m", "elman", "rescore", "--model", str(model), "--lattice",
                           str(lattices), *map(str, options)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    best = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line.strip()}
    summary = [line for line in done.stderr.splitlines() if line.startswith("rescored")][-1]
    return best, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--utterances", type=int, default=200)
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "lattice_wer"))
    ap.add_argument("--max-arcs", type=int, default=20_000)
    ap.add_argument("--lm-scale", type=float, default=1.0)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    refs, lattices, arpa = build(Path(args.out), args.utterances)
    words = sum(len(r) for r in refs.values())
    print(f"{len(refs)} utterances, {words} reference words")
    base = ["--lm-scale", args.lm_scale, "--max-arcs", args.max_arcs, "--jobs", args.jobs]
    rows = [("n-gram alone (the lattice's 1-best)", "2", ["--lambda", "0", "--ngram", arpa, "--max-history", "2"])]
    for how, opts in (("elman alone", []), ("interpolated, λ = 0.5", ["--ngram", arpa, "--lambda", "0.5"])):
        for hist in ("3", "4", None):
            rows.append((how, hist, opts + (["--max-history", hist] if hist else [])))
    print("| LM | expansion | WER % | arcs/s | utterances/s | kept (over --max-arcs) |")
    print("|---|---|---|---|---|---|")
    for how, hist, opts in rows:
        best, summary = rescore(args.model, lattices, *base, *opts)
        errors = sum(wer(refs[u], best.get(u, [])) for u in refs)
        arcs_s = re.search(r"([\d,]+) arcs/s", summary).group(1)
        utt_s = re.search(r"([\d.]+) lattices/s", summary).group(1)
        kept = re.search(r"\((\d+) kept", summary).group(1)
        expansion = "—" if how.startswith("n-gram") else (f"--max-history {hist}" if hist else "exact")
        print(f"| {how} | {expansion} | {100 * errors / words:.2f} | {arcs_s} | {utt_s} | {kept} |", flush=True)


if __name__ == "__main__":
    main()
