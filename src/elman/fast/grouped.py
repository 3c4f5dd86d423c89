"""Softmax output layers over column ranges, for many groups of rows at once.

The word factor of a class softmax is, for each class c present in a
window, an output layer over the columns [a_c, b_c) of [U; b2] for the rows
whose target lies in c. The window is grouped once (``plan``), every
group's logits go into one flat buffer, and all the element-wise work
(exp, the targets' logits, D = E - s·y, the 1/s factors) is one NumPy call
over the whole window: the fixed costs of an output layer (its chunk plan,
scratch lookups, a dozen small NumPy calls) are paid once a window, not
once a class. What stays per group is what the maths makes per group, the
matrix products, and the row sums, which are products too (by BLAS, 3x
faster than ``np.sum`` along rows). Each group's products have the shapes
of an output layer over that class alone, so the numbers are those of
``fast.output`` run class by class, bit for bit (a test holds them to a
stored fixture).

Shapes: h (N,Dh); Ub = [U; b2] (Dh+1,V) as one array (``core.params.stacked_bias``)
or U and b2 apart; groups: ``plan`` of seg (N,) with column ranges bounds.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from elman.core.outputs import BlockDeltas
from elman.core.params import stacked_bias, with_ones
from elman.fast import scratch
from elman.fast.output import TINY_SUM
from elman.fast.threads import compiled_for, one_blas_thread, parallel_for


class Plan:
    """The rows of a window grouped by segment (class), once.

    order (N,): row indices sorted by segment (stable); cuts (G+1,): group g
    is order[cuts[g]:cuts[g+1]]; a, b (G,): its columns [a, b); off (G+1,):
    where its (n_g, w_g) block of logits starts in the flat buffer; coff
    (G+1,): where its columns start among the C = Σ w_g gradient columns;
    start (N,): where each sorted row starts in the flat buffer; width (N,);
    col (N,): the first column of each sorted row's group.
    """

    def __init__(self, seg, bounds):
        from elman.fast.grouping import plan_arrays     # Numba takes 0.3 s to import: only the class layer pays it
        (self.order, self.cuts, self.a, self.b, self.off, self.coff, self.width, self.start,
         self.col) = plan_arrays(seg, bounds)

    @property
    def groups(self) -> int:
        return len(self.a)

    def blocks(self, flat):
        """Each group's logits (n_g, w_g), views of the flat buffer."""
        n, w = np.diff(self.cuts), self.b - self.a
        return [flat[o:o + k * v].reshape(k, v) for o, k, v in zip(self.off.tolist(), n.tolist(), w.tolist())]

    def columns(self):
        """The C gradient columns' ids (sorted when the segments' ranges are)."""
        w = self.b - self.a
        return np.repeat(self.a - self.coff[:-1], w) + np.arange(self.coff[-1])


# The bytes of U's columns a window's groups read from which the training
# thread shares its compiled group products with the spare core (windows of
# 640 positions, a step's timing, the products shared or not): V = 800k,
# K = 900, 107 MiB, 53 -> 44 ms a window; V = 200k, K = 450, 49 MiB, 32 ->
# 27-29 ms; V = 50k, K = 224, 22 MiB, no difference; V = 10k, 7 MiB, none
# at K = 50, a loss at K = 100: below, the handing over costs what the
# second core saves.
SHARE_BYTES = 1 << 25


def _large(plan, U) -> bool:
    """Whether the window's group products read more of U than SHARE_BYTES."""
    return int(plan.coff[-1]) * (U.shape[0] + 1) * U.dtype.itemsize >= SHARE_BYTES


def _tasks(plan, cost):
    """Groups cut into runs of about equal ``cost`` for the threads."""
    k = max(1, min(plan.groups, 8))
    edges = np.searchsorted(np.cumsum(cost), np.arange(1, k) * cost.sum() / k)
    return [r for r in np.split(np.arange(plan.groups), edges) if len(r)]


def grouped_losses(h, U, b2, y, plan: Plan, add=None, add_flat=None):
    """J_r = -log softmax(h_r [U; b2][:, a:b])[y_r - a] for each row r, with
    [a, b) the columns of its group; (N,) in the rows' own order, and a cache.

    As in ``fast.output``: E = exp(z - m) unnormalised, m = 0 in float32
    (rows whose sum shows an overflow or underflow redone with the max
    shift), m = the row max in float64. ``add(z, c, rows)``: adds a term
    into a group's logits z, columns ``c`` (a slice of ids) of the rows
    ``rows`` of h, before any exp (``core.direct``'s n-gram weights);
    ``add_flat(flat, plan)``, where given, adds the same terms into every
    group at once (one compiled call, not one a group), ``add`` then only
    for a row redone."""
    N, Dh = h.shape
    dtype = np.result_type(h, U)
    Ub = stacked_bias(U, b2)
    o = plan.order
    hs = h[o] if Ub is None else with_ones(h[o], dtype)
    flat = scratch.empty("grouped E", (int(plan.off[-1]),), dtype)
    s = np.empty(N, dtype)
    ones = np.ones(int(plan.width.max(initial=1)), dtype)
    shift = dtype == np.float64
    Z = plan.blocks(flat)

    # One compiled call a run of groups makes NumPy's very products (``fast.cblas``),
    # where each word's column of [U; b2] is one stretch of memory (``Params``' layout).
    from elman.fast import cblas        # Numba takes 0.3 s to import: only the class layer's windows pay it
    word_major = Ub is not None and Ub.dtype == dtype and Ub.strides[0] == dtype.itemsize
    blas = cblas.functions(dtype) if word_major and (add is None or add_flat is not None) else None
    one, zero = dtype.type(1), dtype.type(0)

    def logits(task):
        if blas:
            K = hs.shape[1]
            cblas.rows_by_columns(blas, hs, K, plan.cuts, Ub.T, Ub.strides[1] // dtype.itemsize, plan.a, K,
                                  flat, plan.off, task[0], task[-1] + 1, one, zero)
            return
        for g in task:
            i, j, a, b = plan.cuts[g], plan.cuts[g + 1], plan.a[g], plan.b[g]
            z = Z[g]
            if Ub is not None:
                np.matmul(hs[i:j], Ub[:, a:b], out=z)
            else:
                np.matmul(hs[i:j], U[:, a:b], out=z)
                z += b2[a:b]
            if add is not None and add_flat is None:
                add(z, slice(int(a), int(b)), o[i:j])

    def sums(task):
        if blas:
            cblas.row_sums(blas, flat, plan.cuts, plan.off, ones, s, task[0], task[-1] + 1, one, zero)
            return
        for g in task:
            np.matmul(Z[g], ones[:Z[g].shape[1]], out=s[plan.cuts[g]:plan.cuts[g + 1]])

    tasks = _tasks(plan, np.diff(plan.off))
    with one_blas_thread():                     # small products: BLAS threads would only wait
        (compiled_for if blas and _large(plan, U) else parallel_for)(lambda i: logits(tasks[i]), len(tasks))
    if add_flat is not None:
        add_flat(flat, plan)
    yl = y[o] - np.repeat(plan.a, np.diff(plan.cuts))
    zy = flat[plan.start + yl]
    m = np.maximum.reduceat(flat, plan.start) if shift else np.zeros(N, dtype)
    if shift:
        flat -= np.repeat(m, plan.width)
    with np.errstate(over="ignore"):
        np.exp(flat, out=flat)
    with one_blas_thread():
        parallel_for(lambda i: sums(tasks[i]), len(tasks))
    for r in np.flatnonzero(~((s > TINY_SUM) & (s < np.inf))):
        _redo_row(r, hs, U, b2, Ub, plan, flat, s, m, add)
    losses = np.subtract(m, zy, out=zy)
    losses += np.log(s)
    out = np.empty(N, dtype)
    out[o] = losses
    return out, GroupedCache(hs, U, yl, plan, flat, Z, s)


def _redo_row(r, hs, U, b2, Ub, plan, flat, s, m, add):
    """One sorted row again with the max shift (its m = 0 sum over- or underflowed)."""
    g = np.searchsorted(plan.cuts, r, side="right") - 1
    a, b = plan.a[g], plan.b[g]
    z = hs[r] @ Ub[:, a:b] if Ub is not None else hs[r] @ U[:, a:b] + b2[a:b]
    if add is not None:
        add(z[None], slice(int(a), int(b)), plan.order[r:r + 1])
    m[r] = z.max()
    z -= m[r]
    np.exp(z, out=z)
    s[r] = z.sum()
    flat[plan.start[r]:plan.start[r] + b - a] = z


def grouped_backward(dloss, cache, overlap=None, product: bool = False):
    """Gradients of dloss·Σ_r J_r: dJ/dh (N,Dh) in the rows' order, and
    dJ/d[U; b2] on the C columns of the groups, (Dh+1,C) in ``plan.columns()``
    order (every other column is zero). As ``fast.output.output_backward``,
    group by group: D = E - s·y, dJ/dh = (D U[:, a:b]ᵀ)/s,
    [dJ/dU; dJ/db2][:, a:b] = [h/s, 1/s]ᵀ D.

    ``overlap``: a function of dJ/dh run on one core while the others
    compute the column gradients (the recurrence's backward pass). Returns
    (dh, G, overlap(dh) or None); overwrites the cached E with D.
    ``product``: G is not formed; in its place (hw, w), the factor
    h/s·dloss (N,Dh) and w = dloss/s (N,) in the plan's order, for
    ``fast.colgrad`` (then D, in the cache, is the other factor)."""
    hs, U, yl, plan, D, blocks, s = cache       # the cached E and its blocks, turned into D here
    N, Dh = hs.shape[0], U.shape[0]
    w = _sorted(dloss, plan) / s
    D[plan.start + yl] -= s
    dhs = np.empty((N, Dh), s.dtype)
    if product:
        return _dh(plan, blocks, U, w, dhs, D), (np.multiply(hs[:, :Dh], w[:, None]), w), None
    hw = np.empty((Dh + 1, N), s.dtype)
    np.multiply(hs[:, :Dh].T, w, out=hw[:Dh])
    hw[Dh] = w
    # The columns' gradient in U's own layout (see ``fast.output``): word by
    # word, each group's block is then contiguous, as its columns of U are.
    word_major = U.strides[0] < U.strides[1]
    C = int(plan.coff[-1])
    GT = scratch.empty("grouped G", (C, Dh + 1), s.dtype) if word_major else None
    G = GT.T if word_major else scratch.empty("grouped G", (Dh + 1, C), s.dtype)

    def dU_task(task):
        for g in task:
            i, j = plan.cuts[g], plan.cuts[g + 1]
            if word_major:
                np.matmul(blocks[g].T, hw[:, i:j].T, out=GT[plan.coff[g]:plan.coff[g + 1]])
            else:
                np.matmul(hw[:, i:j], blocks[g], out=G[:, plan.coff[g]:plan.coff[g + 1]])

    dh = _dh(plan, blocks, U, w, dhs, D)
    tasks = _tasks(plan, np.diff(plan.off))
    with one_blas_thread():
        done = parallel_for(lambda i: dU_task(tasks[i]), len(tasks), first=overlap and (lambda: overlap(dh)))
    return dh, G, done


def _dh(plan, blocks, U, w, dhs, flat):
    """dJ/dh = (D U[:, a:b]ᵀ)·w group by group, (N,Dh) in the rows' own order
    (D: ``blocks``, each a view of ``flat``)."""
    from elman.fast import cblas
    size = dhs.dtype.itemsize
    blas = cblas.functions(dhs.dtype) if U.strides[0] == size and U.dtype == dhs.dtype else None
    one, zero = dhs.dtype.type(1), dhs.dtype.type(0)

    def dh_task(task):
        if blas:
            cblas.rows_by_rows(blas, flat, plan.cuts, plan.off, U.T, U.strides[1] // size, plan.a, U.shape[0], dhs,
                               task[0], task[-1] + 1, one, zero)
            return
        for g in task:
            i, j = plan.cuts[g], plan.cuts[g + 1]
            np.matmul(blocks[g], U[:, plan.a[g]:plan.b[g]].T, out=dhs[i:j])

    tasks = _tasks(plan, np.diff(plan.off))
    with one_blas_thread():
        (compiled_for if blas and _large(plan, U) else parallel_for)(lambda i: dh_task(tasks[i]), len(tasks))
    dhs *= w[:, None]
    dh = np.empty_like(dhs)
    dh[plan.order] = dhs
    return dh


def _sorted(dloss, plan):
    """dloss, a scalar or per-row weights (N,) in the rows' order, in the plan's order."""
    return dloss if np.ndim(dloss) == 0 else np.asarray(dloss)[plan.order]


def grouped_deltas(dloss, cache, space: str = "words", head=()) -> BlockDeltas:
    """After ``grouped_backward(dloss, cache)``: dJ/dz of each group as
    blocks (space, rows of h, slice of ids, dz (n_g, w_g)) (the cached E
    holds D = E - s·y by then; dz = D/s·dloss), after the blocks ``head``;
    the blocks are ``FlatBlocks``, built as arrays only when read."""
    return BlockDeltas(FlatBlocks(list(head), space, cache.plan, cache.flat, _sorted(dloss, cache.plan) / cache.s))


class FlatBlocks:
    """The parts of a ``BlockDeltas``: the blocks ``head``, then each group's
    dz = D_g·w (row by row) as (space, rows, c, dz), made when iterated.
    A compiled scatter reads them without: ``values()``, every group's dz
    one after another in the flat buffer's layout (``Plan``: sorted row r
    at start[r], width[r] columns from col[r])."""

    def __init__(self, head: list, space: str, plan: Plan, flat, w):
        self.head, self.space, self.plan, self.flat, self.w = head, space, plan, flat, w

    def values(self):
        """The groups' dz, flat: D·w, each row's entries times its w."""
        return self.flat[:int(self.plan.off[-1])] * np.repeat(self.w, self.plan.width)

    def __iter__(self):
        plan, w = self.plan, self.w
        yield from self.head
        for g, Z in enumerate(plan.blocks(self.flat)):
            i, j = plan.cuts[g], plan.cuts[g + 1]
            yield self.space, plan.order[i:j], slice(int(plan.a[g]), int(plan.b[g])), Z * w[i:j, None]

    def __len__(self):
        return len(self.head) + self.plan.groups


class GroupedCache(NamedTuple):
    """What ``grouped_losses`` hands ``grouped_backward``: the sorted rows hs
    (with a column of ones beside h when [U; b2] is one array), the targets
    yl within their groups, the plan, the flat E and its group ``blocks``
    (views of it), the row sums s, all in the plan's order."""
    hs: np.ndarray
    U: np.ndarray
    yl: np.ndarray
    plan: Plan
    flat: np.ndarray
    blocks: list
    s: np.ndarray
