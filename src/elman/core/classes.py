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

The class factor is the output layer itself (``fast.output``) over K
classes; the word factor is an output layer over the columns of each class
present, for the positions whose target is in it, all classes of a window
at once (``fast.grouped``). Its gradients for U and b2 are zero outside the
columns of those classes, and are returned as those columns only: a window
of 640 positions touches 17% of U's columns at V = 800k, K = 900.
"""
from __future__ import annotations

import numpy as np

from elman.core.layers import log_softmax_rows, logits_forward
from elman.fast.grouped import Plan, grouped_backward, grouped_deltas, grouped_losses
from elman.fast.output import output_backward, output_deltas, output_losses
from elman.fast.threads import one_blas_thread


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


def class_output_losses(h, U, b2, Uc, bc, bounds, y, direct=None):
    """J_n = -log P(c_n | h_n) - log P(y_n | c_n, h_n) for each row (N,).

    The class factor is one output layer over the K classes; the word
    factor groups the positions by the class of their target once
    (``fast.grouped``), each group an output layer over its class's columns
    U[:, a:b] (Dh, b-a), so the (N,V) logits are never formed and no work
    depends on V. Returns (losses, cache).
    ``direct``: terms added to the logits (``core.direct``), an object with
    ``add_classes(z, c, rows)`` and ``add_words(z, c, rows)`` (c a slice of
    class or word ids, rows of h).
    """
    c = word_classes(bounds, y)
    plan = Plan(c, bounds)
    with one_blas_thread():                     # every product here is small
        losses, class_cache, _ = output_losses(h, Uc, bc, c, add=direct and direct.add_classes)
    word_losses, word_cache = grouped_losses(h, U, b2, y, plan, add=direct and direct.add_words)
    losses += word_losses
    return losses, (class_cache, word_cache)


def class_output_forward(h, U, b2, Uc, bc, bounds, y, direct=None):
    """loss = Σ_n J_n (natural log, summed in float64); returns (loss, cache)."""
    losses, cache = class_output_losses(h, U, b2, Uc, bc, bounds, y, direct)
    return float(losses.sum(dtype=np.float64)), cache


def class_output_backward(dloss, cache, overlap=None):
    """Gradients of loss = Σ_n J_n through both factors.

    Class factor, δc = P(·|h) - onehot(c)                 (N,K):
        dJ/dUc = hᵀ · δc      (Dh,N)(N,K) = (Dh,K)      dJ/dbc = Σ_rows δc  (K,)
    Word factor of class c = [a,b), rows R with c(y) = c, δw = P(·|c,h) - onehot(y)  (|R|,b-a):
        dJ/dU[:, a:b] = h_Rᵀ · δw   (Dh,|R|)(|R|,b-a)     dJ/db2[a:b] = Σ_rows δw
    and the columns of classes no target is in get zero. Both factors read h:
        dJ/dh = δc · Ucᵀ + (δw · U[:, a:b]ᵀ on the rows R of each class)   (N,Dh)

    Returns (dh, cols, dU_cols, db2_cols, dUc, dbc, done): dJ/dU and dJ/db2
    only on the columns ``cols`` (C,) (sorted; the classes present), as
    (Dh,C) and (C,), every other column zero (a column ``SparseGrad``).
    ``overlap``: a function of dJ/dh, run on one core while the others
    compute the column gradients; ``done`` is its result (or None).
    """
    class_cache, word_cache = cache
    with one_blas_thread():
        dh_class, dUc, dbc, _ = output_backward(dloss, class_cache)

    def total(dh_word):
        dh_class[...] += dh_word
        return overlap(dh_class) if overlap else None

    _, G, done = grouped_backward(dloss, word_cache, overlap=total)
    plan = word_cache[3]
    Dh = G.shape[0] - 1
    return dh_class, plan.columns(), G[:Dh], G[Dh], dUc, dbc, done


def class_output_deltas(cache, dloss):
    """After ``class_output_backward(dloss, cache)``: dJ/dz of both factors
    as (kind, rows, c, dz): kind "classes" or "words", the rows of h (None:
    all), c the slice of class or word ids, dz (rows, c) the logits' gradient."""
    class_cache, word_cache = cache
    parts, w = output_deltas(class_cache, dloss)
    out = [("classes", None, c, D * w[:, None]) for c, D in parts]
    return out + [("words", rows, c, dz) for rows, c, dz in grouped_deltas(word_cache, dloss)]


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
