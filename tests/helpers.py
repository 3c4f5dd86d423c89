"""Helpers the test files share (imported as ``helpers``; no test file imports another).

An independent forward pass for autograd, a small learnable corpus and the
small training sizes, and a checkpoint writer for the crash tests.
"""
import functools
import inspect
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import autograd.numpy as anp
import numpy as np

from elman.model import PARAM_NAMES
from elman.data import EOS, UNK, Vocab, read_tokens
from elman.modelfile import save_checkpoint


# -- an independent forward pass (autograd's NumPy) -----------------------------

def sigmoid_ref(z):
    return 1.0 / (1.0 + anp.exp(-z))


def logsumexp(z, axis, keepdims):
    m = anp.max(z, axis=axis, keepdims=True)
    return m + anp.log(anp.sum(anp.exp(z - m), axis=axis, keepdims=keepdims))


def ag_loss(arrays, inputs, targets, h0):
    """Independent forward: a plain loop over t with autograd's NumPy."""
    L, I, H, U, b1, b2 = (arrays[n] for n in PARAM_NAMES)
    h, total = h0, 0.0
    rows = np.arange(inputs.shape[0])
    for t in range(inputs.shape[1]):
        e = L[inputs[:, t]]
        h = sigmoid_ref(anp.dot(h, H) + anp.dot(e, I) + b1)
        z = anp.dot(h, U) + b2
        logp = z - logsumexp(z, axis=1, keepdims=True)
        total = total - anp.sum(logp[rows, targets[:, t]])
    return total


def ag_direct_loss(a, O, Oc, bounds, inputs, targets, h0):
    """Independent forward: a loop over t; every logit row built as
    h U + b2 + the sum of its F windows of D; classes written out per position."""
    B, T = inputs.shape
    V, F = a["U"].shape[1], O.shape[-1]
    h, total = h0, 0.0
    for t in range(T):
        h = sigmoid_ref(anp.dot(h, a["H"]) + anp.dot(a["L"][inputs[:, t]], a["I"]) + a["b1"])
        for b in range(B):
            z = anp.dot(h[b], a["U"]) + a["b2"] + sum(a["D"][O[t, b, f] + np.arange(V)] for f in range(F))
            w = targets[b, t]
            if bounds is None:
                total = total - (z[w] - logsumexp(z, axis=0, keepdims=False))
                continue
            c = int(np.searchsorted(bounds, w, side="right") - 1)
            K = a["Uc"].shape[1]
            zc = anp.dot(h[b], a["Uc"]) + a["bc"] + sum(a["D"][Oc[t, b, f] + np.arange(K)] for f in range(F))
            zw = z[bounds[c]:bounds[c + 1]]
            total = total - (zc[c] - logsumexp(zc, axis=0, keepdims=False))
            total = total - (zw[w - bounds[c]] - logsumexp(zw, axis=0, keepdims=False))
    return total


def direct_losses(p, ids, h=None, prev=None, before=()):
    """-ln P of each token of ``ids`` one token at a time (``model.rnn_step``
    and ``output_probs``) from state ``h`` (default 0) after ``prev``
    (default ``<eos>`` = id ``EOS_ID``), and the state after the last one.
    ``before``: the words read before ``prev`` (direct connections see them)."""
    from elman.model import output_probs, rnn_step
    h = np.zeros((1, p.Dh)) if h is None else np.asarray(h, np.float64).reshape(1, -1)
    read = list(before) + [EOS_ID if prev is None else prev]
    out = []
    for tok in ids:
        h = rnn_step(p, np.array([read[-1]]), h)
        context = np.array([([-1] * p.order + read)[-(p.order - 1):]]) if p.order else None
        out.append(-np.log(output_probs(p, h, context)[0, tok]))
        read.append(tok)
    return np.array(out), h


def random_model(V=13, d=5, Dh=7, dtype="float64", classes=0, seed=3, direct=0):
    """A model less uniform than a fresh one (its weights shaken); ``direct``:
    that many direct-connection weights, order 3."""
    from elman.model import Params
    p = Params.init(V, d, Dh, seed=seed, dtype=dtype, classes=classes, counts=np.arange(3 * V, 2 * V, -1),
                    direct=direct, direct_order=3)
    rng = np.random.default_rng(seed + 1)
    for a in p.as_dict().values():
        if a.dtype.kind == "f":                     # class_bounds are integers
            a += rng.normal(scale=0.5, size=a.shape).astype(a.dtype)
    return p


EOS_ID = 0      # random_model's <eos>: any id will do for the computations


# -- a small learnable corpus ----------------------------------------------------

NOUNS = "cat dog bird king man woman child horse".split()
VERBS = "saw fed loved found heard".split()


def write_corpus(directory: Path, lines: int = 400, seed: int = 0) -> tuple[str, str]:
    """A small grammar's sentences: learnable, so perplexity must fall."""
    rng = np.random.default_rng(seed)
    text = [f"the {rng.choice(NOUNS)} {rng.choice(VERBS)} the {rng.choice(NOUNS)} ." for _ in range(lines)]
    cut = lines * 4 // 5
    (directory / "train.txt").write_text("\n".join(text[:cut]) + "\n")
    (directory / "valid.txt").write_text("\n".join(text[cut:]) + "\n")
    return str(directory / "train.txt"), str(directory / "valid.txt")


def on_fixture_kernels(test):
    """Run ``test`` under OpenBLAS's AVX2 kernels (OPENBLAS_CORETYPE=Haswell),
    those the fixtures' digits were computed with: on a CPU with AVX-512,
    OpenBLAS's own kernels sum the same products in another order and the
    last bits differ. Elsewhere the test reruns itself in a pytest process
    that has that environment (BLAS picks its kernels once, at load)."""
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        if os.environ.get("OPENBLAS_CORETYPE") == "Haswell":
            return test(*args, **kwargs)
        node = f"{inspect.getsourcefile(test)}::{test.__name__}"
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node],
                              env={**os.environ, "OPENBLAS_CORETYPE": "Haswell"}, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-4000:]
    return wrapper


SMALL = dict(hidden=12, embed=10, streams=4, steps=6)
# The plain Elman model of the seed (the full softmax, no direct connections,
# dropout, sampled softmax or annealing): tests that pin a run's figures, or
# compare with model files of that form, train this.
PLAIN = dict(dropout=0.0, direct=0.0, sampled=0, anneal=0, classes=0)


# -- checkpoints of a tiny model ------------------------------------------------

V, d, Dh = 7, 3, 4


def vocab():
    return Vocab.build("a b a c d a b e".split() + [EOS])


def params(gen=0, dtype="float32"):
    rng = np.random.default_rng(gen)
    shapes = {"L": (V, d), "I": (d, Dh), "H": (Dh, Dh), "U": (Dh, V), "b1": (Dh,), "b2": (V,)}
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


def save(run_dir, gen=0, **kw):
    return save_checkpoint(run_dir, params(gen), vocab(), {"level": "word", "gen": gen, "lr": 0.1}, **kw)


# -- a tiny n-gram model, written as an ARPA file -------------------------------------
# KenLM's Python package only queries models, and elman ships none: the tests
# build their own, a backoff model with absolute discounting, small enough to
# check by hand (``ngram_prob`` is its probability computed without KenLM).

def ngram_model(sentences, order: int = 3, discount: float = 0.7) -> dict:
    """{k: {ngram tuple: (log10 p, log10 backoff)}} for k = 1..order.

    Unigrams: add-one over the words, ``</s>`` and ``<unk>`` (``<s>`` is only
    a context: -99). k-grams: p(w|h) = (c(h,w) - D)/c(h) for the seen ones;
    the mass D·|seen|/c(h) left over goes to the lower order through the
    backoff weight α(h) = (1 - Σ_seen p(w|h)) / (1 - Σ_seen P_lower(w|h')).
    """
    from collections import Counter
    counts = {k: Counter() for k in range(1, order + 1)}
    for words in sentences:
        padded = ["<s>"] + list(words) + ["</s>"]
        for k in range(1, order + 1):
            for i in range(len(padded) - k + 1):
                if k > 1 or padded[i] != "<s>":
                    counts[k][tuple(padded[i:i + k])] += 1
    vocab = set(w for (w,) in counts[1]) | {"<unk>"}
    total = sum(counts[1].values())
    probs = {1: {(w,): np.log10((counts[1][(w,)] + 1) / (total + len(vocab))) for w in vocab}}
    probs[1][("<s>",)] = -99.0
    backoff = {}
    for k in range(2, order + 1):
        context = Counter()
        for gram, c in counts[k].items():
            context[gram[:-1]] += c
        probs[k] = {g: np.log10((c - discount) / context[g[:-1]]) for g, c in counts[k].items()}
        seen = {}
        for g in counts[k]:
            seen.setdefault(g[:-1], []).append(g)
        for h, grams in seen.items():
            left = 1 - sum(10 ** probs[k][g] for g in grams)
            lower = 1 - sum(10 ** _backoff_prob(probs, backoff, g[1:]) for g in grams)
            backoff[h] = np.log10(left / lower)
    return {k: {g: (p, backoff.get(g, 0.0)) for g, p in probs[k].items()} for k in probs}


def _backoff_prob(probs, backoff, gram) -> float:
    """log10 P(gram[-1] | gram[:-1]) with backing off, from the tables being built."""
    if gram in probs.get(len(gram), {}):
        return probs[len(gram)][gram]
    if len(gram) == 1:
        return probs[1][("<unk>",)]
    return backoff.get(gram[:-1], 0.0) + _backoff_prob(probs, backoff, gram[1:])


def ngram_prob(model: dict, context, word) -> float:
    """log10 P(word | context) of ``ngram_model``'s model, as an ARPA reader computes it."""
    order = max(model)
    known = {g[0] for g in model[1]}
    gram = tuple(w if w in known else "<unk>" for w in list(context)[-(order - 1):] + [word])
    probs = {k: {g: v[0] for g, v in table.items()} for k, table in model.items()}
    backoff = {g: v[1] for table in model.values() for g, v in table.items()}
    return _backoff_prob(probs, backoff, gram)


def write_arpa(path, model: dict) -> None:
    lines = ["\\data\\"] + [f"ngram {k}={len(model[k])}" for k in sorted(model)] + [""]
    for k in sorted(model):
        lines.append(f"\\{k}-grams:")
        for gram, (p, b) in sorted(model[k].items()):
            lines.append(f"{p:.7f}\t{' '.join(gram)}" + (f"\t{b:.7f}" if k < max(model) else ""))
        lines.append("")
    lines.append("\\end\\")
    Path(path).write_text("\n".join(lines) + "\n")


# -- the in-memory reading of corpora: the reference the token-id cache must equal ---------

def legacy_vocab(tokens, max_vocab=None, min_count=1) -> Vocab:
    """``Vocab.build`` over a whole list of tokens: the reference the
    streaming vocabulary must equal."""
    counter = Counter(tokens)  # insertion order = first occurrence
    first = {tok: i for i, tok in enumerate(counter)}
    words = [t for t, c in counter.most_common() if c >= min_count and t not in (EOS, UNK)]
    if max_vocab is not None:
        words = words[:max_vocab - 2]
    kept = set(words)
    unk = counter.get(UNK, 0) + sum(c for t, c in counter.items() if t not in kept and t not in (EOS, UNK))
    final = {t: counter[t] for t in words}
    final[EOS] = counter.get(EOS, 0)
    final[UNK] = unk
    absent = len(first)  # specials missing from the data sort after the rest
    order = sorted(final, key=lambda t: (-final[t], first.get(t, absent), t))
    return Vocab(order, [final[t] for t in order])


def legacy_ids(path, vocab, level="word", encoding="utf-8") -> np.ndarray:
    """A file's ids as training read them before the cache: every token in a
    Python list, then int64 ids."""
    get, unk = vocab.stoi.get, vocab.unk_id
    return np.array([get(t, unk) for t in read_tokens(path, level, encoding)], dtype=np.int64)
