"""A class softmax's dJ/dU as the product that makes it, taken straight into
Adagrad's step.

The word factor's gradient on the columns of the classes present is, group
by group (``fast.grouped``: the rows R of class c = [a, b), D_c = E - s·y
there, w = dloss/s),

    dJ/dU[:, a:b] = (h_R ⊙ w_R)ᵀ · D_c        (Dh,|R|)(|R|,b-a)

At V = 10k a window touches nearly every class: the product writes all
Dh·V entries, and the optimizer reads them back beside U and Adagrad's G.
``ColumnProduct`` keeps the two factors instead; Adagrad's step
(``step``) forms each column in registers and updates U's column and
its G in the same pass, and the global norm the clipping needs comes from
the factors' Gram matrices, group by group,

    ||dJ/dU||² = Σ_c Σ_{r,r' ∈ R} (hw_r · hw_r') (D_r · D_r')

without the product (a class of many rows and few columns, a frequent
word's, column by column). SGD's step goes the same way. ``sparse()``
builds the reference's array (the products ``fast.grouped`` made), for
every other use; the step agrees with the rule on that array to rounding (the sums go in another order than
BLAS's). D is the layer's scratch buffer, held: ``fast.scratch`` hands a
buffer out again only once nothing uses it, so a step may come any time.

The processes of one machine sum their products without building them
(``training.nodeproduct``): their factors lie side by side in shared
memory, and the sum on a span of columns is one ``ColumnProduct`` of all
their rows (``summed_groups``: a class's rows of every process, in rank
order), which a process steps on its span of U as one process steps its
own.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from elman.core.sparse import SparseGrad
from elman.fast import kernels_optim as ko
from elman.fast.threads import beside, parallel_for


@njit(cache=True, nogil=True, error_model="numpy")
def step_columns(P, ps, S, ss, hw, flat, rows, start, rcuts, a, wid, g0, g1, scale, lr, eps, adagrad):
    """Groups g0..g1-1 (``Groups``): each column k of group g,
    v = scale·Σ_r D[r, k]·hw[rows[r]] (Dh,) over its rows r, D[r, k] =
    flat[start[r] + k], then on column a[g] + k of P (row of its memory,
    stride ps) and of G (stride ss) Adagrad's step, G += v²;
    P -= (lr·v) / (sqrt(G) + eps), or (``adagrad`` False; G unread) SGD's,
    P -= v·lr: ``kernels_optim``'s rules, operation for operation."""
    Dh = hw.shape[1]
    v = np.empty(Dh, P.dtype)
    for g in range(g0, g1):
        i, j, w = rcuts[g], rcuts[g + 1], wid[g]
        for k in range(w):
            v[:] = 0
            for r in range(i, j):
                d = flat[start[r] + k]
                hr = hw[rows[r]]
                for q in range(Dh):
                    v[q] += d * hr[q]
            col = a[g] + k
            Pr = P[col * ps:col * ps + Dh]
            if not adagrad:
                for q in range(Dh):
                    Pr[q] -= (v[q] * scale) * lr
                continue
            Gr = S[col * ss:col * ss + Dh]
            for q in range(Dh):
                x = v[q] * scale
                t = Gr[q] + x * x
                Gr[q] = t
                Pr[q] -= (x * lr) / (np.sqrt(t) + eps)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def gram_sq(hw, flat, rows, start, rcuts, wid):
    """Σ over groups of ||Σ_r hw[rows[r]]ᵀ D[r]||², in float64: by the rows'
    Gram matrices, Σ_{r,r'} (hw_r · hw_r')(D_r · D_r'), where a group has
    fewer rows than twice its columns, else (a frequent word's class: many
    rows, few columns) column by column. The terms summed in any order (so
    in vector registers: a norm for the clipping, not a gradient), NaN kept NaN."""
    total = 0.0
    Dh = hw.shape[1]
    v = np.empty(Dh, np.float64)
    for g in range(rcuts.shape[0] - 1):
        i, j, w = rcuts[g], rcuts[g + 1], wid[g]
        if j - i >= 2 * w:
            for k in range(w):
                v[:] = 0.0
                for r in range(i, j):
                    d = np.float64(flat[start[r] + k])
                    hr = hw[rows[r]]
                    for q in range(Dh):
                        v[q] += d * hr[q]
                for q in range(Dh):
                    total += v[q] * v[q]
            continue
        for r in range(i, j):
            for r2 in range(r, j):
                hh = 0.0
                h1, h2 = hw[rows[r]], hw[rows[r2]]
                for q in range(Dh):
                    hh += np.float64(h1[q]) * h2[q]
                dd = 0.0
                x, y = start[r], start[r2]
                for k in range(w):
                    dd += np.float64(flat[x + k]) * flat[y + k]
                total += hh * dd if r2 == r else 2.0 * hh * dd
    return total


class Groups(NamedTuple):
    """Which rows make which columns: group g is the columns a[g] ..
    a[g] + wid[g] - 1 of U, made by the rows rows[rcuts[g]:rcuts[g+1]] of
    hw, row r's entries of D starting at flat[start[r]] (D[r, k] =
    flat[start[r] + k]). One process's ``fast.grouped.Plan`` is one (``of_plan``);
    several processes' factors side by side another (``summed_groups``)."""
    a: np.ndarray
    wid: np.ndarray
    rcuts: np.ndarray
    rows: np.ndarray
    start: np.ndarray

    @classmethod
    def of_plan(cls, plan) -> "Groups":
        return cls(plan.a, plan.b - plan.a, plan.cuts, np.arange(len(plan.start)), plan.start)

    def columns(self) -> np.ndarray:
        """The columns' ids, group after group."""
        coff = np.r_[0, np.cumsum(self.wid)]
        return np.repeat(self.a - coff[:-1], self.wid) + np.arange(coff[-1])


class ColumnProduct:
    """dJ/dU (Dh,V) of a class softmax's word factor as its two factors:
    hw (N,Dh), the sorted rows of h times their w, and the flat D, with the
    ``Groups`` of which rows make which columns; times ``scale`` (``*=``).
    ``plan``: the ``fast.grouped.Plan`` of one process's window it is (the
    groups then its own); None for several processes' factors side by side
    (``groups``: their ``summed_groups``), whose product is their sum."""

    axis = -1

    def __init__(self, shape, hw, flat, plan=None, groups=None):
        self.shape, self.hw, self.flat, self.plan = tuple(shape), hw, flat, plan
        self.groups = Groups.of_plan(plan) if groups is None else groups
        self.dtype, self.scale = hw.dtype, 1.0
        self.index = self.groups.columns()
        self._gram = None

    @property
    def size(self) -> int:
        return self.hw.shape[1] * len(self.index)

    def __imul__(self, c):
        self.scale *= float(c)
        return self

    def start_sq_sum(self) -> None:
        """Start the norm's sum beside the caller (``threads.beside``: on the
        training windows' spare core, where there is one)."""
        g = self.groups
        self._gram = beside(lambda: gram_sq(self.hw, self.flat, g.rows, g.start, g.rcuts, g.wid))

    def sq_sum(self) -> float:
        g = self.groups
        gram = self._gram() if self._gram is not None else gram_sq(self.hw, self.flat, g.rows, g.start, g.rcuts, g.wid)
        return gram * self.scale ** 2

    def finite(self) -> bool:
        return math.isfinite(self.sq_sum())

    def sparse(self) -> SparseGrad:
        """The product as an array: (Dh,C) on the columns ``index``, in U's
        word-by-word layout (each column one stretch of memory); one
        process's as ``fast.grouped`` made it, the same products."""
        gr, hw = self.groups, self.hw
        VT = np.empty((len(self.index), hw.shape[1]), self.dtype)
        coff = np.r_[0, np.cumsum(gr.wid)]
        if self.plan is not None:
            for g, Z in enumerate(self.plan.blocks(self.flat)):
                np.matmul(Z.T, hw[gr.rcuts[g]:gr.rcuts[g + 1]], out=VT[coff[g]:coff[g + 1]])
        for g in range(len(gr.a)) if self.plan is None else ():
            r = slice(gr.rcuts[g], gr.rcuts[g + 1])
            D = self.flat[gr.start[r][:, None] + np.arange(gr.wid[g])]
            np.matmul(D.T, hw[gr.rows[r]], out=VT[coff[g]:coff[g + 1]])
        if self.scale != 1.0:
            VT *= self.dtype.type(self.scale)
        return SparseGrad(self.index, VT.T, self.shape, -1)

    def dense(self):
        return self.sparse().dense()

    def step(self, U, G, lr: float, eps: float = 0.0) -> bool:
        """Adagrad's step on U's columns with state G (both (Dh,V), each
        column a stretch of memory), or with G None SGD's; False, nothing
        done, for another layout or dtype."""
        parts = self.step_parts(U, G)
        if parts is None:
            return False
        run, n = parts
        parallel_for(lambda t: run(t, lr, eps), n, serial=n == 1)
        return True

    def step_parts(self, U, G, n: int | None = None):
        """``step`` as ``(run, k)``: run(t, lr, eps), t < k, steps the t-th of
        k spans of columns of about equal work, any thread, in any order (no
        column is in two spans, so the numbers are ``step``'s); n spans
        (default: two a thread). None for another layout or dtype."""
        P = ko.rows_of(U, -1)
        S = P if G is None else ko.rows_of(G, -1)
        fp, fs = ko.flat(P), ko.flat(S)
        if fp is None or fs is None or not ko.compiled(P, S, self.hw):
            return None
        gr, dt = self.groups, U.dtype.type
        tasks = _tasks(gr, n)

        def run(t, lr, eps):
            step_columns(fp[0], fp[1], fs[0], fs[1], self.hw, self.flat, gr.rows, gr.start, gr.rcuts, gr.a,
                         gr.wid, tasks[t], tasks[t + 1], dt(self.scale), dt(lr), dt(eps), G is not None)
        return run, len(tasks) - 1

    def __repr__(self):
        return f"ColumnProduct({len(self.index)} columns of {self.shape})"


def _tasks(groups, n: int | None = None):
    """Group boundaries cutting the groups into n runs of about equal work
    (default: two for each thread), fewer where the groups are fewer."""
    from elman.fast.threads import THREADS
    G = len(groups.a)
    k = max(1, min(G, n or 2 * THREADS))
    cost = np.cumsum((np.diff(groups.rcuts) + 1) * groups.wid)
    edges = np.searchsorted(cost, np.arange(1, k) * cost[-1] / k) if len(cost) else []
    return sorted({0, G, *map(int, edges)})


class Factors(NamedTuple):
    """One process's factors among several laid side by side: its rows of hw
    start at row ``row0`` of the common hw, its D at ``flat0`` of the common
    flat; its plan's a, b, cuts and off (``fast.grouped.Plan``)."""
    row0: int
    flat0: int
    a: np.ndarray
    b: np.ndarray
    cuts: np.ndarray
    off: np.ndarray


def _pieces(parts: list) -> tuple:
    """Every process's groups in one table, sorted by column, then by process:
    (a, b, rows, first row in hw, first entry in flat) (P,) each."""
    cols = [(p.a, p.b, np.diff(p.cuts), p.row0 + p.cuts[:-1], p.flat0 + p.off[:-1], np.full(len(p.a), r))
            for r, p in enumerate(parts)]
    a, b, n, row, at, rank = (np.concatenate(c).astype(np.int64) for c in zip(*cols))
    order = np.lexsort((rank, a))
    return a[order], b[order], n[order], row[order], at[order]


def summed_groups(parts: list, lo: int, hi: int) -> Groups:
    """The ``Groups`` of processes' factors (``Factors``, in rank order)
    side by side on the columns [lo, hi): a class several processes' rows
    make is one group of all their rows, in rank order; a class cut by lo
    or hi, its columns within."""
    a, b, n, row, at = _pieces(parts)
    keep = (b > lo) & (a < hi)
    a, b, n, row, at = a[keep], b[keep], n[keep], row[keep], at[keep]
    a0 = np.maximum(a, lo)
    new = np.r_[True, a0[1:] != a0[:-1]] if len(a0) else np.zeros(0, bool)
    cn = np.r_[0, np.cumsum(n)]
    piece = np.repeat(np.arange(len(n)), n)
    local = np.arange(cn[-1]) - cn[piece]
    return Groups(a0[new], (np.minimum(b, hi) - a0)[new], cn[np.r_[new, True]], row[piece] + local,
                  at[piece] + local * (b - a)[piece] + (a0 - a)[piece])


def column_cuts(parts: list, n: int, size: int, per_column: int = 2) -> list:
    """[0, c_1, .., n]: the columns cut into ``size`` spans of about equal
    work for a step of the processes' factors (``Factors``) summed, a
    column costing its class's rows plus ``per_column`` (its update of U
    and G); integers, so every process that reads the same factors cuts alike."""
    a, b, rows, _, _ = _pieces(parts)
    ua, first, inv = np.unique(a, return_index=True, return_inverse=True)
    per = np.bincount(inv, rows, minlength=len(ua)).astype(np.int64) + per_column
    cum = np.r_[0, np.cumsum((b[first] - ua) * per)]
    cuts = [0]
    for r in range(1, size):
        t = int(cum[-1]) * r // size
        c = min(int(np.searchsorted(cum, t, side="right")) - 1, len(ua) - 1)
        col = int(min(ua[c] + -(-(t - cum[c]) // per[c]), b[first][c]))
        cuts.append(max(cuts[-1], col))
    return cuts + [n]


def word_bias_grad(plan, flat, w, shape) -> SparseGrad:
    """dJ/db2 on the columns of the groups: Σ_r D[r, k]·w_r, column by column."""
    return SparseGrad(plan.columns(), _bias_sums(flat, w, plan.cuts, plan.b - plan.a, plan.off, plan.coff),
                      shape, -1)


@njit(cache=True, nogil=True)
def _bias_sums(flat, w, cuts, wid, off, coff):
    out = np.zeros(coff[-1], flat.dtype)
    for g in range(cuts.shape[0] - 1):
        i, j, n, o, c = cuts[g], cuts[g + 1], wid[g], off[g], coff[g]
        for r in range(i, j):
            x = o + (r - i) * n
            for k in range(n):
                out[c + k] += flat[x + k] * w[r]
    return out


__all__ = ["ColumnProduct", "Groups", "Factors", "summed_groups", "column_cuts", "step_columns", "gram_sq",
           "word_bias_grad"]
