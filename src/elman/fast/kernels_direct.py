"""The direct weights' gradient as the scatter that would build it.

Under sampled softmax (or a class softmax) a window's dJ/dD is a sum of
N·F·S values scattered into the table D (M,): each (position n, feature f,
column s) adds dJ/dO[n, s] at D[O[n, f] + cols[s]] (``fast.direct``'s
``Features.grad``, which stays the reference). At the recipe's sizes (B·T = 320, F = 2, S = 1000, M = 2M) that touches a third
of the table, so the reference builds it dense: it zeroes 2M entries,
scatters, and the trainer then passes over all 2M four more times (the
per-token scale, the finiteness check, the plain SGD step). D takes plain
SGD steps outside the clipping (``training.optim``), a linear update, so

    D <- D - c·Σ (scattered values)  =  scatter of (-c·values) into D:

``ScatterGrad`` keeps the parts of the scatter, takes ``*=`` as a factor,
and the optimizer's plain step (``apply``) scatters -c·scale·values
straight into D: one pass over the cells touched, no table of sums beside
D. The step agrees with the reference's to rounding: a cell that several
positions touch takes their values one at a time, where the reference sums
them first, then scales and steps. ``dense()`` builds the reference's
array to the bit (the same additions in the same order).

Parts: ("cols", O (n,F), cols (S,), vals (n,S)): D[O[n,f] + cols[s]] += vals[n,s];
("points", O (n,F), y (n,), vals (n,)): D[O[n,f] + y[n]] += vals[n];
("rows", O (n,F), at (3,n) = (start, width, col), vals flat): D[O[r,f] + col[r] + k] += vals[start[r] + k]
for k < width[r], rows r then f then k (a class softmax's word blocks, ``fast.grouped.FlatBlocks``).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from elman.fast.threads import chunks, parallel_for

CELLS = 1 << 16         # the fewest cells worth sharing between threads (scattered, and table cells a range)


@njit(cache=True, nogil=True, error_model="numpy")
def scatter_cols(D, O, cols, vals, c, lo, hi):
    """D[m] += c·vals[n, s] for m = O[n, f] + cols[s] in [lo, hi), n then f
    then s (repeats add up in that order); ``cols`` ascending, so each
    window's cells in the range are one run of s, found by bisection."""
    N, F = O.shape
    for n in range(N):
        v = vals[n]
        for f in range(F):
            o = O[n, f]
            W = D[o:]
            first = np.searchsorted(cols, lo - o)
            last = np.searchsorted(cols, hi - o)
            for s in range(first, last):
                W[cols[s]] += c * v[s]


@njit(cache=True, nogil=True, error_model="numpy")
def scatter_points(D, O, y, vals, c, lo, hi):
    """D[m] += c·vals[n] for m = O[n, f] + y[n] in [lo, hi), f then n (the
    reference's ``np.add.at`` per feature)."""
    N, F = O.shape
    for f in range(F):
        for n in range(N):
            m = O[n, f] + y[n]
            if lo <= m < hi:
                D[m] += c * vals[n]


@njit(cache=True, nogil=True, error_model="numpy")
def scatter_rows(D, O, at, vals, c, lo, hi):
    """D[m] += c·vals[start[r] + k] for m = O[r, f] + col[r] + k in [lo, hi),
    k < width[r], r then f then k; ``at`` = (start, width, col) (3, n)."""
    N, F = O.shape
    for r in range(N):
        s, w, col = at[0, r], at[1, r], at[2, r]
        for f in range(F):
            o = O[r, f] + col
            W, v = D[o:o + w], vals[s:s + w]
            for k in range(max(lo - o, 0), min(hi - o, w)):
                W[k] += c * v[k]


class ScatterGrad:
    """dJ/dD (``shape`` (M,)) as the parts of its scatter, times ``scale``."""

    axis = 0

    def __init__(self, shape, dtype, parts):
        self.shape, self.dtype, self.scale = tuple(shape), np.dtype(dtype), 1.0
        self.parts = [(kind, np.ascontiguousarray(O, np.int64), np.ascontiguousarray(at, np.int64),
                       np.ascontiguousarray(v, dtype)) for kind, O, at, v in parts]

    @classmethod
    def of(cls, feats, deltas):
        """From a window's ``fast.direct.Features`` and the logits' gradient
        in a form of ``core.outputs``: columns (sampled softmax) or blocks
        (a class softmax); None for the full softmax's chunks (every window
        of V: the reference's dense array is the cheaper form there)."""
        from elman.core.outputs import BlockDeltas, ColumnDeltas
        if isinstance(deltas, ColumnDeltas):
            return cls.sampled(feats.D, feats.O, *deltas)
        if isinstance(deltas, BlockDeltas):
            return cls.classes(feats.D, feats.O, feats.Oc, deltas.parts)
        return None

    @classmethod
    def sampled(cls, D, O, y, samples, dtrue, dO) -> "ScatterGrad":
        """From ``ColumnDeltas`` (y, samples, dtrue, dO): as ``fast.direct.Features.grad``.
        The samples in ascending order (a stable sort: repeats keep their order)."""
        samples = np.asarray(samples)
        if np.any(np.diff(samples) < 0):
            order = np.argsort(samples, kind="stable")
            samples, dO = samples[order], dO[:, order]
        return cls(D.shape, D.dtype, [("points", O, y, dtrue), ("cols", O, samples, dO)])

    @classmethod
    def classes(cls, D, O, Oc, parts) -> "ScatterGrad":
        """From ``BlockDeltas``' parts (space, rows, c, dz): as ``fast.direct.Features.grad``;
        the word blocks of ``fast.grouped.FlatBlocks`` as one "rows" part."""
        flat = getattr(parts, "plan", None) is not None and parts.space == "words"
        blocks = parts.head if flat else parts
        out = [_block_part((Oc if kind == "classes" else O)[slice(None) if rows is None else rows], c, dz)
               for kind, rows, c, dz in blocks]
        if flat:
            plan = parts.plan
            out.append(("rows", O[plan.order], np.stack([plan.start, plan.width, plan.col]), parts.values()))
        return cls(D.shape, D.dtype, out)

    def __imul__(self, c):
        self.scale *= float(c)
        return self

    @property
    def size(self) -> int:
        """Cells the scatter adds to, repeats counted."""
        return sum(O.shape[1] * v.size for _, O, _, v in self.parts)

    def finite(self) -> bool:
        return all(bool(np.isfinite(v).all()) for *_, v in self.parts) and np.isfinite(self.scale)

    def apply(self, D, c: float, span: tuple | None = None) -> None:
        """D -= c·(scale·(this gradient)), the values scattered straight into
        D times -c·scale (the reference's dense step to rounding); no pass
        over the whole table. ``span`` (lo, hi): only the cells in [lo, hi)
        (one process's slice of a D that the processes of a machine share)."""
        self._scatter(D, -(D.dtype.type(c) * D.dtype.type(self.scale)), span)

    def dense(self):
        """The gradient as an (M,) array: the reference's additions, in its order."""
        out = np.zeros(self.shape, self.dtype)
        self._scatter(out, 1.0)
        if self.scale != 1.0:
            out *= self.dtype.type(self.scale)
        return out

    def sq_sum(self) -> float:
        d = self.dense()
        return float(np.dot(d, d))

    def _scatter(self, D, c, span: tuple | None = None) -> None:
        """The parts times c into D (cells [lo, hi) of ``span`` only), the
        cells cut into ranges that the cores share: each cell is written by
        one thread, its additions in the one order, so the sums are the same
        whatever the threads."""
        c = D.dtype.type(c)
        start, stop = span or (0, D.size)
        cuts = chunks(stop - start, CELLS) if self.size >= CELLS else [slice(0, stop - start)]

        def part(i):
            lo, hi = start + cuts[i].start, start + cuts[i].stop
            for kind, O, at, v in self.parts:
                _SCATTER[kind](D, O, at, v, c, lo, hi)
        parallel_for(part, len(cuts))

    def __repr__(self):
        return f"ScatterGrad({self.size} cells of {self.shape} in {len(self.parts)} parts)"


def _block_part(O, c: slice, dz):
    """A block dz (n, |c|) of columns c of every row's windows as a "rows"
    part: row r's values at r·|c| in dz's flat layout (the same cells and
    additions, in the same order, as ("cols", O, c's ids, dz))."""
    n, w = dz.shape
    at = np.stack([np.arange(n) * w, np.full(n, w), np.full(n, c.start)])
    return "rows", O, at, np.ascontiguousarray(dz).reshape(-1)


_SCATTER = {"cols": scatter_cols, "points": scatter_points, "rows": scatter_rows}


__all__ = ["ScatterGrad", "scatter_cols", "scatter_points"]
