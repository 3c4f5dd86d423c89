"""Lattice rescoring against path enumeration: every path of a small random
lattice scored by ``elman score``, the best one found by brute force."""
from __future__ import annotations

import gzip
import math
import subprocess
import sys

import numpy as np
import pytest

from helpers import ngram_model, ngram_prob, random_model, write_arpa
from elman.data.vocab import Vocab
from elman.lattice import kaldi, slf
from elman.lattice.graph import NULL_WORDS, Arc, Final, Lattice
from elman.lattice.rescore import Settings, rescore
from elman.modelfile import load_params, save_checkpoint

WORDS = "<eos> <unk> the a cat dog sat on mat ran".split()
SPOKEN = WORDS[2:] + ["zebra"]                  # zebra: not in the model's vocabulary (<unk>)


@pytest.fixture(scope="module", params=[0, 3], ids=["full", "classes"])
def model(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    p = random_model(V=len(WORDS), d=5, Dh=7, dtype="float32", classes=request.param)
    save_checkpoint(d, p.as_dict(), Vocab(WORDS), {"level": "word"})
    return d


def random_lattice(seed: int, nodes: int = 7, name: str = "u") -> Lattice:
    """A DAG with nodes in order, 0 the start and the last the end; some
    arcs without a word; every node on a path from start to end."""
    rng = np.random.default_rng(seed)
    arcs = []
    for v in range(nodes - 1):
        targets = {v + 1} | set(rng.integers(v + 1, nodes, size=rng.integers(0, 3)).tolist())
        for t in sorted(targets):
            for _ in range(rng.integers(1, 3)):
                word = None if rng.random() < 0.15 else str(rng.choice(SPOKEN))
                lm = float(rng.normal(-2, 1)) if word else 0.0       # an arc without a word has no LM score
                arcs.append(Arc(v, int(t), word, float(rng.normal(-5, 2)), lm, len(arcs) + 1))
    return Lattice(name, "mem", nodes, 0, arcs, {nodes - 1: Final(0.0, 0.0, 0)}, {"format": "slf"})


def paths(lat: Lattice):
    """Every (words, ac, lm) from start to a final node."""
    out = lat.out_arcs()

    def walk(v, words, ac, lm):
        if v in lat.finals:
            yield words, ac + lat.finals[v].ac, lm + lat.finals[v].lm
        for i in out[v]:
            a = lat.arcs[i]
            w = [a.word] if a.word is not None and a.word not in NULL_WORDS else []
            yield from walk(a.dst, words + w, ac + a.ac, lm + a.lm)
    return list(walk(lat.start, [], 0.0, 0.0))


def elman_scores(model, sentences, tmp_path) -> dict:
    """ln P of each sentence, from the ``elman score`` command."""
    unique = sorted(set(" ".join(s) for s in sentences))
    data = tmp_path / "sentences.txt"
    data.write_text("".join(s + "\n" for s in unique))
    done = subprocess.run([sys.executable, "-m", "elman", "score", "--model", str(model), "--data", str(data)],
                          capture_output=True, text=True, check=True)
    values = [float(x) for x in done.stdout.splitlines()[:len(unique)]]
    return {s: v * math.log(10) for s, v in zip(unique, values)}


def loaded(model):
    p, vocab, _ = load_params(model)
    return p, vocab


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_expansion_is_path_enumeration(model, seed, tmp_path):
    lat = random_lattice(seed)
    every = paths(lat)
    scores = elman_scores(model, [w for w, _, _ in every], tmp_path)
    s = Settings(lm_scale=1.7, penalty=-0.3)
    r = rescore(lat, *loaded(model), s)
    want = max(every, key=lambda t: t[1] + s.lm_scale * scores[" ".join(t[0])] + s.penalty * len(t[0]))
    best = want[1] + s.lm_scale * scores[" ".join(want[0])] + s.penalty * len(want[0])
    assert r.words == want[0]
    assert r.score == pytest.approx(best, abs=1e-4)
    # and every path of the rescored lattice carries its own elman score
    got = sorted((" ".join(w), round(ac, 4), round(lm, 3)) for w, ac, lm in paths(r.lattice))
    expect = sorted((" ".join(w), round(ac, 4), round(scores[" ".join(w)], 3)) for w, ac, _ in every)
    assert got == expect


def test_merged_histories_equal_exact_when_long_enough(model):
    p, vocab = loaded(model)
    lat = random_lattice(5, nodes=8)
    longest = max(len(w) for w, _, _ in paths(lat))
    exact = rescore(lat, p, vocab, Settings())
    merged = rescore(lat, p, vocab, Settings(max_history=longest))
    assert (merged.words, merged.score, merged.arcs) == (exact.words, exact.score, exact.arcs)
    short = rescore(lat, p, vocab, Settings(max_history=1))
    assert short.arcs < exact.arcs             # merging does merge
    assert short.lattice.nodes < exact.lattice.nodes


def test_max_arcs_keeps_the_old_scores(model):
    p, vocab = loaded(model)
    lat = random_lattice(1)
    r = rescore(lat, p, vocab, Settings(lm_scale=2.0, max_arcs=len(lat.arcs)))
    assert r.kept and "--max-arcs" in r.kept
    want = max(paths(lat), key=lambda t: t[1] + 2.0 * t[2])
    assert r.words == want[0] and r.score == pytest.approx(want[1] + 2.0 * want[2])
    assert r.lattice is lat


def _as_slf(lat: Lattice) -> str:
    lines = ["VERSION=1.0", f"UTTERANCE={lat.name}", f"N={lat.nodes} L={len(lat.arcs)}"]
    lines += [f"I={v} t={v / 10:.2f}" for v in range(lat.nodes)]
    lines += [f"J={j} S={a.src} E={a.dst} W={a.word or '!NULL'} a={a.ac:.6f} l={a.lm:.6f}"
              for j, a in enumerate(lat.arcs)]
    return "\n".join(lines) + "\n"


def _as_kaldi(lat: Lattice, ids: dict) -> str:
    lines = [lat.name] + [f"{a.src}\t{a.dst}\t{ids[a.word] if a.word else 0}\t{-a.lm:.6f},{-a.ac:.6f},1_2"
                          for a in lat.arcs]
    return "\n".join(lines + [f"{v}\t0,0," for v in lat.finals]) + "\n\n"


def test_slf_and_kaldi_forms_agree(model, tmp_path):
    p, vocab = loaded(model)
    ids = {w: i + 1 for i, w in enumerate(SPOKEN)}
    (tmp_path / "words.txt").write_text("<eps> 0\n" + "".join(f"{w} {i}\n" for w, i in ids.items()))
    lats = [random_lattice(k, name=f"u{k}") for k in range(3)]
    (tmp_path / "a.lat.gz").write_bytes(gzip.compress(_as_slf(lats[0]).encode()))
    (tmp_path / "k.txt").write_text("".join(_as_kaldi(lat, ids) for lat in lats))
    words, _ = kaldi.read_words(tmp_path / "words.txt")
    from_kaldi = list(kaldi.read(tmp_path / "k.txt", words))
    s = Settings(lm_scale=1.3, penalty=0.2, max_history=2)
    a = rescore(slf.read(tmp_path / "a.lat.gz"), p, vocab, s)
    b = rescore(from_kaldi[0], p, vocab, s)
    assert a.words == b.words and a.score == pytest.approx(b.score, abs=1e-5)
    # written and read back, each form keeps its scores
    again = kaldi.read_words(tmp_path / "words.txt")[0]
    (tmp_path / "out.txt").write_text(kaldi.write(b.lattice, ids))
    back = next(kaldi.read(tmp_path / "out.txt", again))
    (tmp_path / "out.lat").write_bytes(slf.write(a.lattice))
    back_slf = slf.read(tmp_path / "out.lat")
    for lat in (back, back_slf):
        got = sorted(round(x[1] + 1.3 * x[2], 3) for x in paths(lat))
        assert got == sorted(round(x[1] + 1.3 * x[2], 3) for x in paths(b.lattice))


def test_words_on_nodes(model, tmp_path):
    """HTK lattices with W= on nodes: a link carries the word of the node it enters."""
    text = ("VERSION=1.0\nstart=0\nend=4\nN=5 L=5\nI=0 W=!NULL\nI=1 W=the\nI=2 W=a\nI=3 W=cat\nI=4 W=!NULL\n"
            "J=0 S=0 E=1 a=-1 l=-1\nJ=1 S=0 E=2 a=-1.5 l=-1\nJ=2 S=1 E=3 a=-2 l=-1\nJ=3 S=2 E=3 a=-2 l=-1\n"
            "J=4 S=3 E=4 a=0 l=0\n")
    (tmp_path / "n.lat").write_text(text)
    lat = slf.read(tmp_path / "n.lat")
    assert [a.word for a in lat.arcs] == ["the", "a", "cat", "cat", None]
    r = rescore(lat, *loaded(model), Settings())
    out = slf.write(r.lattice).decode()
    assert "W=cat" in out and "J=0\tS=0\tE=1\ta=" in out      # words stay on the nodes


def test_ngram_interpolation(model, tmp_path):
    """With --ngram the n-gram's own score is taken out of the old one and
    ln(λ P_elman + (1-λ) P_ngram) put in, token by token."""
    pytest.importorskip("kenlm")
    table = ngram_model([["the", "cat", "sat"], ["a", "dog", "ran"], ["the", "dog", "sat", "on", "the", "mat"]])
    write_arpa(tmp_path / "lm.arpa", table)
    from elman.inference.ngram import NgramModel
    lat = random_lattice(3, nodes=5)
    every = paths(lat)
    scores_lp = {}
    p, vocab = loaded(model)
    lam, ln10 = 0.3, math.log(10)
    # ln P_elman per token of each path, from one-path lattices (their words are checked against elman score above)
    for words, ac, lm in every:
        one = Lattice("x", "mem", len(words) + 1, 0,
                      [Arc(k, k + 1, w, 0.0, 0.0, k) for k, w in enumerate(words)], {len(words): Final(0, 0, 0)},
                      {"format": "kaldi"})
        r = rescore(one, p, vocab, Settings())
        toks = [a.lm for a in r.lattice.arcs] + [r.lattice.finals[len(words)].lm]
        ng = [ngram_prob(table, ["<s>"] + words[:k], w) * ln10 for k, w in enumerate(words + ["</s>"])]
        mixed = sum(math.log(lam * math.exp(e) + (1 - lam) * math.exp(g)) - g for e, g in zip(toks, ng))
        scores_lp[" ".join(words)] = (ac, lm + mixed)
    r = rescore(lat, p, vocab, Settings(lam=lam, max_history=None), NgramModel(tmp_path / "lm.arpa"))
    want = max(scores_lp.items(), key=lambda kv: kv[1][0] + kv[1][1])
    assert " ".join(r.words) == want[0]
    assert r.score == pytest.approx(sum(want[1]), abs=1e-4)


def test_lambda_alone_mixes_with_the_old_score(model):
    """ln(λ P_elman + (1-λ) exp(old)) on every arc that scores a token; an arc
    without one keeps its old score."""
    p, vocab = loaded(model)
    lat = random_lattice(4, nodes=5)
    old = {a.line: a.lm for a in lat.arcs}
    rep = rescore(lat, p, vocab, Settings())
    mix = rescore(lat, p, vocab, Settings(lam=0.25))
    checked = 0
    for a, b in zip(rep.lattice.arcs, mix.lattice.arcs):
        assert (a.src, a.dst, a.line) == (b.src, b.dst, b.line)
        if a.word is None and b.dst not in mix.lattice.finals:
            assert b.lm == old[b.line]
            continue
        assert b.lm == pytest.approx(math.log(0.25 * math.exp(a.lm) + 0.75 * math.exp(old[b.line])), abs=1e-9)
        checked += 1
    assert checked > 5


@pytest.mark.parametrize("classes, direct", [(3, 0), (3, 500), (0, 500)])
def test_targets_only_equal_the_whole_output_layer(classes, direct):
    """The lattice's targets-only path (scoring's: a class softmax's K + |c|
    logits, the direct terms of those alone) against every logit of
    output_log_probs, with the contexts the direct connections read."""
    from elman.lattice.lm import log_probs
    from elman.model import output_log_probs
    p = random_model(V=len(WORDS), d=5, Dh=7, dtype="float64", classes=classes, direct=direct)
    rng = np.random.default_rng(0)
    H = rng.uniform(0, 1, (6, 7))
    context = rng.integers(-1, len(WORDS), (6, 2)) if direct else None
    req = np.array([(r, t) for r in range(6) for t in range(len(WORDS))])
    want = output_log_probs(p, H, context)[req[:, 0], req[:, 1]]
    np.testing.assert_allclose(log_probs(p, H, context, req), want, rtol=1e-12, atol=1e-12)
