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
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from elman.core.sparse import SparseGrad
from elman.fast import kernels_optim as ko
from elman.fast.threads import parallel_for


@njit(cache=True, nogil=True, error_model="numpy")
def step_columns(P, ps, S, ss, hw, flat, cuts, a, wid, off, g0, g1, scale, lr, eps, adagrad):
    """Groups g0..g1-1: each column k of group g, v = scale·Σ_r D[r, k]·hw[r]
    (Dh,), then on column a[g] + k of P (row of its memory, stride ps) and
    of G (stride ss) Adagrad's step, G += v²; P -= (lr·v) / (sqrt(G) + eps),
    or (``adagrad`` False; G unread) SGD's, P -= v·lr: ``kernels_optim``'s
    rules, operation for operation."""
    Dh = hw.shape[1]
    v = np.empty(Dh, P.dtype)
    for g in range(g0, g1):
        i, j, w, o = cuts[g], cuts[g + 1], wid[g], off[g]
        for k in range(w):
            v[:] = 0
            for r in range(i, j):
                d = flat[o + (r - i) * w + k]
                hr = hw[r]
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
def gram_sq(hw, flat, cuts, wid, off):
    """Σ over groups of ||hw_Rᵀ D_R||², in float64: by the rows' Gram
    matrices, Σ_{r,r'} (hw_r · hw_r')(D_r · D_r'), where a group has fewer
    rows than twice its columns, else (a frequent word's class: many rows,
    few columns) column by column. The terms summed in any order (so in
    vector registers: a norm for the clipping, not a gradient), NaN kept NaN."""
    total = 0.0
    Dh = hw.shape[1]
    v = np.empty(Dh, np.float64)
    for g in range(cuts.shape[0] - 1):
        i, j, w, o = cuts[g], cuts[g + 1], wid[g], off[g]
        if j - i >= 2 * w:
            for k in range(w):
                v[:] = 0.0
                for r in range(i, j):
                    d = np.float64(flat[o + (r - i) * w + k])
                    for q in range(Dh):
                        v[q] += d * hw[r, q]
                for q in range(Dh):
                    total += v[q] * v[q]
            continue
        for r in range(i, j):
            for r2 in range(r, j):
                hh = 0.0
                for q in range(Dh):
                    hh += np.float64(hw[r, q]) * hw[r2, q]
                dd = 0.0
                x, y = o + (r - i) * w, o + (r2 - i) * w
                for k in range(w):
                    dd += np.float64(flat[x + k]) * flat[y + k]
                total += hh * dd if r2 == r else 2.0 * hh * dd
    return total


class ColumnProduct:
    """dJ/dU (Dh,V) of a class softmax's word factor as its two factors:
    hw (N,Dh), the sorted rows of h times their w, and the flat D of
    ``fast.grouped`` with its ``Plan``; times ``scale`` (``*=``)."""

    axis = -1

    def __init__(self, shape, hw, flat, plan):
        self.shape, self.hw, self.flat, self.plan = tuple(shape), hw, flat, plan
        self.dtype, self.scale = hw.dtype, 1.0
        self.index = plan.columns()

    @property
    def size(self) -> int:
        return self.hw.shape[1] * len(self.index)

    def __imul__(self, c):
        self.scale *= float(c)
        return self

    def sq_sum(self) -> float:
        p = self.plan
        return gram_sq(self.hw, self.flat, p.cuts, p.b - p.a, p.off) * self.scale ** 2

    def finite(self) -> bool:
        return math.isfinite(self.sq_sum())

    def sparse(self) -> SparseGrad:
        """The product as ``fast.grouped`` made it: (Dh,C) on the columns ``index``,
        in U's word-by-word layout (each column one stretch of memory)."""
        p, hw = self.plan, self.hw
        VT = np.empty((len(self.index), hw.shape[1]), self.dtype)
        for g, Z in enumerate(p.blocks(self.flat)):
            np.matmul(Z.T, hw[p.cuts[g]:p.cuts[g + 1]], out=VT[p.coff[g]:p.coff[g + 1]])
        if self.scale != 1.0:
            VT *= self.dtype.type(self.scale)
        return SparseGrad(self.index, VT.T, self.shape, -1)

    def dense(self):
        return self.sparse().dense()

    def step(self, U, G, lr: float, eps: float = 0.0) -> bool:
        """Adagrad's step on U's columns with state G (both (Dh,V), each
        column a stretch of memory), or with G None SGD's; False, nothing
        done, for another layout or dtype."""
        P = ko.rows_of(U, -1)
        S = P if G is None else ko.rows_of(G, -1)
        fp, fs = ko.flat(P), ko.flat(S)
        if fp is None or fs is None or not ko.compiled(P, S, self.hw):
            return False
        p, dt = self.plan, U.dtype.type
        tasks = _tasks(p)

        def run(t):
            step_columns(fp[0], fp[1], fs[0], fs[1], self.hw, self.flat, p.cuts, p.a, p.b - p.a, p.off,
                         tasks[t], tasks[t + 1], dt(self.scale), dt(lr), dt(eps), G is not None)
        parallel_for(run, len(tasks) - 1, serial=len(tasks) == 2)
        return True

    def __repr__(self):
        return f"ColumnProduct({len(self.index)} columns of {self.shape})"


def _tasks(plan):
    """Group boundaries cutting the groups into runs of about equal work for the threads."""
    from elman.fast.threads import THREADS
    k = max(1, min(plan.groups, 2 * THREADS))
    cost = np.cumsum(np.diff(plan.off) + (plan.b - plan.a))
    edges = np.searchsorted(cost, np.arange(1, k) * cost[-1] / k) if len(cost) else []
    return sorted({0, plan.groups, *map(int, edges)})


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


__all__ = ["ColumnProduct", "step_columns", "gram_sq", "word_bias_grad"]
