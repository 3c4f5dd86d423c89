"""The class-factorised softmax at speed: the function of
``core.classes.ClassSoftmax`` (the reference, which the tests hold this to).

The class factor is the full softmax's fast form (``fast.output``) over K
classes; the word factor is an output layer over the columns of each class
present, for the positions whose target is in it, all classes of a window
at once (``fast.grouped``). Its gradients for U and b2 are zero outside the
columns of those classes, and are returned as those columns only: a window
of 640 positions touches 17% of U's columns at V = 800k, K = 900.
"""
from __future__ import annotations

import numpy as np

from elman.core.classes import ClassSoftmax, word_classes
from elman.core.outputs import Backward, BlockDeltas, Forward
from elman.fast.grouped import Plan, grouped_backward, grouped_deltas, grouped_losses
from elman.fast.output import output_backward, output_deltas, output_losses
from elman.fast.threads import one_blas_thread


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
    word_losses, word_cache = grouped_losses(h, U, b2, y, plan, add=direct and direct.add_words,
                                             add_flat=getattr(direct, "add_grouped", None))
    losses += word_losses
    return losses, (class_cache, word_cache)


def class_output_forward(h, U, b2, Uc, bc, bounds, y, direct=None):
    """loss = Σ_n J_n (natural log, summed in float64); returns (loss, cache)."""
    losses, cache = class_output_losses(h, U, b2, Uc, bc, bounds, y, direct)
    return float(losses.sum(dtype=np.float64)), cache


def class_output_backward(dloss, cache, overlap=None, product: bool = False):
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
    ``product``: dU_cols is a ``fast.colgrad.ColumnProduct`` (its factors,
    the product left to the optimizer's step) and db2_cols a ``SparseGrad``.
    """
    class_cache, word_cache = cache
    with one_blas_thread():
        dh_class, dUc, dbc, _ = output_backward(dloss, class_cache)

    def total(dh_word):
        dh_class[...] += dh_word
        return overlap(dh_class) if overlap else None

    dh_word, G, done = grouped_backward(dloss, word_cache, overlap=total, product=product)
    plan = word_cache.plan
    if product:
        from elman.fast.colgrad import ColumnProduct, word_bias_grad    # Numba's import: only gradients pay it
        U = word_cache.U
        dU = ColumnProduct(U.shape, G[0], word_cache.flat, plan)
        dU.start_sq_sum()       # the clipping's norm on a spare core, if any, while ``overlap`` runs here
        done = total(dh_word)
        return (dh_class, plan.columns(), dU, word_bias_grad(plan, word_cache.flat, G[1], U.shape[1:]), dUc, dbc,
                done)
    Dh = G.shape[0] - 1
    return dh_class, plan.columns(), G[:Dh], G[Dh], dUc, dbc, done


def class_output_deltas(dloss, cache) -> BlockDeltas:
    """After ``class_output_backward(dloss, cache)``: dJ/dz of both factors
    as blocks (space, rows, c, dz): space "classes" or "words", the rows of
    h (None: all), c the slice of class or word ids, dz (rows, c) the logits' gradient."""
    class_cache, word_cache = cache
    parts, w = output_deltas(dloss, class_cache)
    return grouped_deltas(dloss, word_cache, head=[("classes", None, c, D * w[:, None]) for c, D in parts])


class FastClassSoftmax(ClassSoftmax):
    """``ClassSoftmax`` by ``class_output_losses``/``class_output_backward``:
    dJ/dU and dJ/db2 on the columns of the classes present only."""

    def losses(self, p, h, y, direct=None, overlap=None) -> Forward:
        losses, cache = class_output_losses(h, p.U, p.b2, p.Uc, p.bc, p.class_bounds, y, direct)
        return Forward(losses, cache, overlap() if overlap is not None else None)

    def scores(self, p, h, y, direct=None, overlap=None):
        """Scoring's losses by one compiled loop (``fast.classscore``), its rows
        shared between the threads with ``overlap`` (run first, beside them)."""
        from elman.fast.classscore import class_losses      # Numba's import: only scoring pays it
        terms = direct and direct.scoring_terms(y)
        return class_losses(h, p.U, p.b2, p.Uc, p.bc, p.class_bounds, y, terms, beside=overlap)

    def score_tasks(self, p, h, y, direct=None):
        """``scores``' losses as (out, n, task) for ``threads.Shared``: task(i),
        i in range(n), fills its rows of ``out``, on whichever thread runs it."""
        from elman.fast.classscore import class_loss_tasks
        terms = direct and direct.scoring_terms(y)
        return class_loss_tasks(h, p.U, p.b2, p.Uc, p.bc, p.class_bounds, y, terms)

    def backward(self, dloss, cache, overlap=None) -> Backward:
        """dJ/dU as a ``fast.colgrad.ColumnProduct`` (``model.bptt`` builds its
        array unless the optimizer's step takes it as it is), dJ/db2 a column ``SparseGrad``."""
        dh, _, dU, db2, dUc, dbc, done = class_output_backward(dloss, cache, overlap=overlap, product=True)
        return Backward(dh, {"U": dU, "b2": db2, "Uc": dUc, "bc": dbc}, done)

    def deltas(self, dloss, cache) -> BlockDeltas:
        return class_output_deltas(dloss, cache)
