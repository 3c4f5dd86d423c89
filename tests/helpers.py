"""Helpers the test files share (imported as ``helpers``; no test file imports another).

An independent forward pass for autograd, a small learnable corpus and the
small training sizes, and a checkpoint writer for the crash tests.
"""
from pathlib import Path

import autograd.numpy as anp
import numpy as np

from elman.core.model import PARAM_NAMES
from elman.data import EOS, Vocab
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


SMALL = dict(hidden=12, embed=10, streams=4, steps=6)


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
