"""Class-factorised softmax: Mikolov's frequency-binned word classes.

    P(w | h)    = P(c(w) | h) · P(w | c(w), h)
    P(c | h)    = softmax(h Uc + bc)[c]                  over the K classes
    P(w | c, h) = softmax(h U[:, c] + b2[c])[w]          over the words of class c

Vocabulary ids are sorted by descending training count, so a class is a
contiguous id range: ``bounds`` (K+1,) int64, class c holds the ids
bounds[c] <= w < bounds[c+1]. U (Dh,V) and b2 (V,) keep their shapes and
roles within a class; Uc (Dh,K) and bc (K,) score the classes. A position
costs K + |c(y)| output units instead of V, for training and for scoring.

The product is a normalised distribution over all V words (each factor is a
softmax), so losses and perplexities computed from it are exact, not
estimates: no sampling is involved.

This module is the reference (NumPy, dense (N,V) arrays); the fast form,
``elman.fast.classes``, never forms the (N,V) logits.
"""
from __future__ import annotations

import numpy as np

from elman.core.direct import CLASSES, WORDS
from elman.core.layers import log_softmax_rows, logits_forward
from elman.core.outputs import Backward, BlockDeltas, Forward, OutputLayer, Space, run_overlap

CLASS_NAMES = ("Uc", "bc", "class_bounds")      # the tensors a class softmax adds to Params


def class_bounds(counts, K: int, power: float = 0.5) -> np.ndarray:
    """Frequency binning as in Mikolov's RNNLM toolkit: walk the ids in
    order (descending count) and start a new class each time the running
    share of Σ count^power passes another 1/K. ``power`` 0.5 (the toolkit's
    default) gives the frequent words' classes more words than ``power`` 1
    (equal unigram mass per class) and the rare words' fewer, which lowers
    the expected cost K + |c(y)| of a position on Zipfian text.

    Returns bounds (K+1,) int64: 0 = bounds[0] < ... < bounds[K] = V, every
    class non-empty (a word heavier than 1/K takes a class to itself and the
    next classes start one word later each).
    """
    counts = np.asarray(counts, dtype=np.float64)
    V = counts.size
    if counts.ndim != 1 or not 1 <= K <= V:
        raise ValueError(f"need 1 <= classes <= vocabulary size, got {K} classes for {V} words")
    if (counts < 0).any() or not np.isfinite(counts).all():
        raise ValueError("word counts must be finite and non-negative")
    mass = counts ** power
    total = mass.sum()
    before = (np.cumsum(mass) - mass) / total if total > 0 else np.arange(V) / V
    a = np.arange(1, K)
    start = np.searchsorted(before, a / K, side="left")
    start = np.maximum.accumulate(start - a) + a      # each class gets at least one word...
    start = np.minimum(start, V - K + a)               # ...and leaves one for every later class
    return np.concatenate([[0], start, [V]]).astype(np.int64)


def word_classes(bounds, y):
    """The class of each word id in y."""
    return np.searchsorted(bounds, y, side="right") - 1


def class_log_probs(h, U, b2, Uc, bc, bounds, extra=None):
    """log P(w | h) for every word (B,V): the class log-probability plus the
    log-softmax within each class, by segmented max and sum over the columns.
    ``extra``: (B,V) and (B,K) terms added to the word and class logits."""
    h = np.atleast_2d(h)
    z = logits_forward(h, U, b2)
    zc = logits_forward(h, Uc, bc)
    if extra is not None:
        z += extra[0]
        zc += extra[1]
    starts, sizes = bounds[:-1], np.diff(bounds)
    z -= np.repeat(np.maximum.reduceat(z, starts, axis=1), sizes, axis=1)
    within = np.log(np.add.reduceat(np.exp(z), starts, axis=1))
    z -= np.repeat(within - log_softmax_rows(zc), sizes, axis=1)
    return z


class ClassSoftmax(OutputLayer):
    """P(w | h) = P(c(w) | h) · P(w | c(w), h), K frequency-binned classes
    (Uc, bc, class_bounds); J_n = -log P(c_n | h_n) - log P(y_n | c_n, h_n)."""

    name = "classes"
    tensors = CLASS_NAMES

    def losses(self, p, h, y, direct=None, overlap=None) -> Forward:
        y = np.asarray(y)
        zw, zc = logits_forward(h, p.U, p.b2), logits_forward(h, p.Uc, p.bc)
        if direct is not None:
            direct.add_words(zw, slice(0, p.V))
            direct.add_classes(zc, slice(0, p.classes))
        bounds = p.class_bounds
        starts, sizes = bounds[:-1], np.diff(bounds)
        zw -= np.repeat(np.maximum.reduceat(zw, starts, axis=1), sizes, axis=1)
        pw = np.exp(zw)
        pw /= np.repeat(np.add.reduceat(pw, starts, axis=1), sizes, axis=1)   # P(w | c(w), h)
        pc = np.exp(log_softmax_rows(zc))                                       # P(c | h)
        c, rows = word_classes(bounds, y), np.arange(len(y))
        losses = -np.log(pc[rows, c]) - np.log(pw[rows, y])
        return Forward(losses, (h, p.U, p.Uc, bounds, y, c, pw, pc), run_overlap(overlap))

    def _dz(self, dloss, cache):
        """δc = P(·|h) - onehot(c) (N,K); δw = P(·|c,h) - onehot(y) on the
        columns of c(y), 0 elsewhere (N,V); each times dloss."""
        h, U, Uc, bounds, y, c, pw, pc = cache
        rows = np.arange(len(y))
        w = np.reshape(np.asarray(dloss, pw.dtype), (-1, 1))
        dzc = pc.copy()
        dzc[rows, c] -= 1.0
        same = word_classes(bounds, np.arange(pw.shape[1]))[None, :] == c[:, None]
        dzw = np.where(same, pw, 0.0).astype(pw.dtype)
        dzw[rows, y] -= 1.0
        return dzw * w, dzc * w

    def backward(self, dloss, cache, overlap=None) -> Backward:
        """dJ/dU = hᵀ δw, dJ/db2 = Σ_rows δw, dJ/dUc = hᵀ δc, dJ/dbc = Σ_rows δc,
        dJ/dh = δw Uᵀ + δc Ucᵀ      (N,Dh)."""
        h, U, Uc = cache[:3]
        dzw, dzc = self._dz(dloss, cache)
        dh = dzw @ U.T + dzc @ Uc.T
        grads = {"U": h.T @ dzw, "b2": dzw.sum(axis=0), "Uc": h.T @ dzc, "bc": dzc.sum(axis=0)}
        return Backward(dh, grads, run_overlap(overlap, dh))

    def deltas(self, dloss, cache) -> BlockDeltas:
        dzw, dzc = self._dz(dloss, cache)
        return BlockDeltas([("classes", None, slice(0, dzc.shape[1]), dzc),
                            ("words", None, slice(0, dzw.shape[1]), dzw)])

    def log_probs(self, p, h, extra=None) -> np.ndarray:
        return class_log_probs(h, p.U, p.b2, p.Uc, p.bc, p.class_bounds, extra)

    def width(self, p) -> int:
        return p.classes + int(np.diff(p.class_bounds).max())

    def units(self, p, y) -> float:
        """K + the mean size of the targets' classes."""
        return float(p.classes + np.diff(p.class_bounds)[word_classes(p.class_bounds, np.ravel(y))].mean())

    def logit_spaces(self, p) -> list:
        return [Space("z", "U", "b2", p.V, WORDS), Space("zc", "Uc", "bc", p.classes, CLASSES)]

    def onnx_nodes(self, p, inits: dict, helper) -> list:
        """log P(w|h) = LogSoftmax over classes, gathered per word, + LogSoftmax within each class."""
        bounds = np.asarray(p.class_bounds, np.int64)
        K = len(bounds) - 1
        inits.update(sizes=np.diff(bounds), word_class=np.repeat(np.arange(K, dtype=np.int64), np.diff(bounds)))
        parts = [f"z_{c}" for c in range(K)]
        return [
            helper.make_node("LogSoftmax", ["zc"], ["log_pc"], axis=-1),
            helper.make_node("Gather", ["log_pc", "word_class"], ["log_pc_w"], axis=2),
            helper.make_node("Split", ["z", "sizes"], parts, axis=2),
            *[helper.make_node("LogSoftmax", [z], [f"w_{z}"], axis=-1) for z in parts],
            helper.make_node("Concat", [f"w_{z}" for z in parts], ["log_pw"], axis=2),
            helper.make_node("Add", ["log_pc_w", "log_pw"], ["log_probs"]),
        ]

    def onnx_sparse(self, p) -> tuple:
        return (WORDS,)

    def onnx_score_nodes(self, p, inits: dict, helper, terms=None) -> list:
        """log P(y|h) = log P(c(y)|h) + log P(y|c(y),h) from "zc" [B,T,K] and
        "hid" [B,T,Dh]: for each class k of more than one word, the positions
        whose target is in k (NonZero), their rows of h times U's columns of
        k, so Dh·(K + |c(y)|) a position as in ``losses``, not Dh·V; then one
        ScatterElements of every class's results. A one-word class's
        log P(y|c,h) is 0. ``terms(tag, rows, first, width, z)`` -> (nodes,
        z'): z [n,width] plus the direct terms of words first.. at the flat
        positions rows (None: no direct connections)."""
        bounds = np.asarray(p.class_bounds, np.int64)
        cls = word_classes(bounds, np.arange(p.V))
        inits.update(sc_word_class=cls, sc_word_index=np.arange(p.V) - bounds[cls],
                     sc_last=np.array([-1], np.int64), sc_rows=np.array([-1, p.Dh], np.int64))
        nodes = [
            helper.make_node("LogSoftmax", ["zc"], ["sc_log_pc"], axis=-1),
            helper.make_node("Gather", ["sc_word_class", "targets"], ["sc_cls"]),
            helper.make_node("Unsqueeze", ["sc_cls", "sc_last"], ["sc_cls1"]),
            helper.make_node("GatherElements", ["sc_log_pc", "sc_cls1"], ["sc_lpc1"], axis=2),
            helper.make_node("Squeeze", ["sc_lpc1", "sc_last"], ["sc_lpc"]),
            helper.make_node("Reshape", ["hid", "sc_rows"], ["sc_h"]),
            helper.make_node("Reshape", ["sc_cls", "sc_last"], ["sc_c"]),
            helper.make_node("Gather", ["sc_word_index", "targets"], ["sc_j2"]),
            helper.make_node("Reshape", ["sc_j2", "sc_last"], ["sc_j"]),
        ]
        rows, parts = [], []
        for k in np.flatnonzero(np.diff(bounds) > 1):
            q = f"sc{k}_"
            nodes += _onnx_class_rows(p, int(k), bounds, q, inits, helper, terms)
            rows.append(q + "rows")
            parts.append(q + "lp")
        if not parts:                                   # every class one word: P(y|c,h) = 1
            return nodes + [helper.make_node("Identity", ["sc_lpc"], ["log_prob"])]
        return nodes + [
            helper.make_node("Shape", ["sc_c"], ["sc_n"]),
            helper.make_node("ConstantOfShape", ["sc_n"], ["sc_zero"],
                             value=helper.make_tensor("zero", 1, [1], [0.0])),
            helper.make_node("Concat", rows, ["sc_all_rows"], axis=0),
            helper.make_node("Concat", parts, ["sc_all_lp"], axis=0),
            helper.make_node("ScatterElements", ["sc_zero", "sc_all_rows", "sc_all_lp"], ["sc_lpw"], axis=0),
            helper.make_node("Shape", ["targets"], ["sc_bt"]),
            helper.make_node("Reshape", ["sc_lpw", "sc_bt"], ["sc_lpw2"], allowzero=1),     # T may be 0
            helper.make_node("Add", ["sc_lpc", "sc_lpw2"], ["log_prob"]),
        ]


def _onnx_class_rows(p, k: int, bounds, q: str, inits: dict, helper, terms) -> list:
    """q + "rows" (the flat positions whose target is in class k) and q + "lp"
    (log P(y|k,h) there), from "sc_c", "sc_h" and "sc_j" (``onnx_score_nodes``)."""
    a, b = int(bounds[k]), int(bounds[k + 1])
    inits.update({q + "k": np.array(k, np.int64), q + "U": np.ascontiguousarray(p.U[:, a:b], np.float32),
                  q + "b": np.ascontiguousarray(p.b2[a:b], np.float32)})
    nodes = [
        helper.make_node("Equal", ["sc_c", q + "k"], [q + "eq"]),
        helper.make_node("NonZero", [q + "eq"], [q + "nz"]),
        helper.make_node("Reshape", [q + "nz", "sc_last"], [q + "rows"]),
        helper.make_node("Gather", ["sc_h", q + "rows"], [q + "h"]),
        helper.make_node("MatMul", [q + "h", q + "U"], [q + "zU"]),
        helper.make_node("Add", [q + "zU", q + "b"], [q + "z0"]),
    ]
    z = q + "z0"
    if terms is not None:
        more, z = terms(q, q + "rows", a, b - a, z)
        nodes += more
    return nodes + [
        helper.make_node("LogSoftmax", [z], [q + "logp"], axis=-1),
        helper.make_node("Gather", ["sc_j", q + "rows"], [q + "tj"]),
        helper.make_node("Unsqueeze", [q + "tj", "sc_last"], [q + "tj1"]),
        helper.make_node("GatherElements", [q + "logp", q + "tj1"], [q + "lp1"], axis=1),
        helper.make_node("Squeeze", [q + "lp1", "sc_last"], [q + "lp"]),
    ]
