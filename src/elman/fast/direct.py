"""Direct connections at speed: the hashed n-gram terms of ``core.direct``
added into the output layers' logits, and dJ/dD gathered from the logits'
gradients in any of the forms the layers' ``deltas`` return (the tests
hold them to ``core.direct``'s ``direct_forward``/``direct_backward``).
"""
from __future__ import annotations

import numpy as np

from elman.core.direct import CLASSES, WORDS, offsets, window_view
from elman.core.outputs import BlockDeltas, ChunkDeltas, ColumnDeltas
from elman.core.sparse import SparseGrad
from elman.fast import scratch

def add_windows(z, D, O, start: int, width: int) -> None:
    """z (n, width) += Σ_f D[O[:, f] + start : ... + width], the window's
    columns [start, start+width) of every feature (a gather of rows)."""
    W = window_view(D, start, width)
    for f in range(O.shape[1]):
        z += W[O[:, f]]


def gather_targets(D, O, y) -> np.ndarray:
    """Σ_f D[O[n, f] + y[n]] (n,): one column a row (the sampled softmax's targets)."""
    return sum(D[O[:, f] + y] for f in range(O.shape[1]))


def gather_shared(D, O, cols) -> np.ndarray:
    """Σ_f D[O[n, f] + cols[k]] (n, S): the same columns for every row (its samples)."""
    return sum(D[O[:, f, None] + cols] for f in range(O.shape[1]))


class DirectGrad:
    """dJ/dD accumulated from parts, returned dense or as ``SparseGrad`` cells.

    ``bound``: the most cells the parts can touch (counting repeats). When it
    is at least a quarter of the table, or ``sparse`` is off, the gradient is
    dense (the full softmax touches F windows of V per position: nearly all of a
    table of millions); otherwise only the touched cells come back, in sorted
    order, found with a reused boolean mask over the table (an O(M) scan,
    far cheaper here than sorting a million ids). The accumulator and the mask
    are kept between calls and left all zero and all False.
    """

    _keep: dict = {}

    def __init__(self, size: int, dtype, bound: int, sparse: bool):
        self.size, self.dtype = size, np.dtype(dtype)
        self.dense = not sparse or bound * 4 >= size
        if self.dense:
            self.acc, self.mask = scratch.empty("direct grad", (size,), self.dtype), None
            self.acc[...] = 0
        else:
            key = (size, self.dtype.str)
            if key not in self._keep:
                self._keep.clear()                  # one table size at a time
                self._keep[key] = (np.zeros(size, self.dtype), np.zeros(size, bool))
            self.acc, self.mask = self._keep[key]

    def windows(self, O, start: int, dz) -> None:
        """Each row n of dz (n, width) into the F windows D[O[n, f] + start : ...]."""
        width = dz.shape[1]
        if width <= 512:                            # narrow windows: one scatter of points
            idx = O[:, :, None] + (start + np.arange(width))
            self.points(idx, np.broadcast_to(dz[:, None, :], idx.shape))
            return
        for n, row in enumerate(dz):
            for o in O[n] + start:
                self.acc[o:o + width] += row
                if self.mask is not None:
                    self.mask[o:o + width] = True

    def points(self, idx, vals) -> None:
        """acc[idx] += vals, repeats adding up."""
        idx = np.ravel(idx)                         # ufunc.at's fast path wants one flat index
        np.add.at(self.acc, idx, np.ravel(vals))
        if self.mask is not None:
            self.mask[idx] = True

    def shared(self, O, cols, vals) -> None:
        """acc[O[n, f] + cols[s]] += vals[n, s]: the same columns of every row's F windows."""
        from elman.fast import windows
        none = np.zeros(0, bool)
        windows.scatter_shared(self.acc, none if self.mask is None else self.mask,
                               np.ascontiguousarray(O), np.asarray(cols, np.int64), np.ascontiguousarray(vals))

    def result(self):
        if self.dense:
            return self.acc
        cells = np.flatnonzero(self.mask)
        values = self.acc[cells]
        self.acc[cells] = 0
        self.mask[cells] = False
        return SparseGrad(cells, values, (self.size,), 0)

    def reset(self) -> None:
        """After an error part-way: leave the kept arrays zero again."""
        if not self.dense:
            self.acc[...] = 0
            self.mask[...] = False


def dense_terms(feats, n: int):
    """(n,V) word terms and (n,K) class terms (None without classes) of any
    hashing scheme's features: its own ``add_words`` and ``add_classes``."""
    zd = np.zeros((n, feats.V), feats.D.dtype)
    feats.add_words(zd, slice(0, feats.V))
    if not feats.K:
        return zd, None
    zc = np.zeros((n, feats.K), feats.D.dtype)
    feats.add_classes(zc, slice(0, feats.K))
    return zd, zc


class Features:
    """The direct features of one window of a model with table D (M,) and
    order N, for V words (and K classes): what the output layers add to
    their logits, and the gradient of D from what they hand back.

    ``ctx`` (B, N-2+T) from ``contexts``; rows are time-major (t*B + b).
    """

    def __init__(self, D, order: int, V: int, K: int, ctx):
        self.D, self.V, self.K = D, V, K
        self.O = offsets(ctx, order, D.size - V + 1, WORDS)
        self.Oc = offsets(ctx, order, D.size - K + 1, CLASSES) if K else None

    # -- forward: the hooks of the output layers
    def add_words(self, z, c, rows=None) -> None:
        add_windows(z, self.D, self.O if rows is None else self.O[rows], c.start, c.stop - c.start)

    def add_classes(self, z, c, rows=None) -> None:
        add_windows(z, self.D, self.Oc if rows is None else self.Oc[rows], c.start, c.stop - c.start)

    def add_grouped(self, flat, plan) -> None:
        """``add_words`` into every group of a class softmax's word logits
        at once (``fast.grouped``'s flat buffer and plan), compiled."""
        from elman.fast import windows     # Numba takes 0.3 s to import: only gradients and classes pay it
        windows.add_rows(flat, self.D, self.O, plan.order, plan.start, plan.width, plan.col)

    def scoring_terms(self, y, rows=None):
        """(D, O, Oc) for ``fast.classscore.class_losses``: elman's windows, whatever the targets."""
        if rows is None:
            return self.D, self.O, self.Oc
        return self.D, self.O[rows], None if self.Oc is None else self.Oc[rows]

    def sampled_terms(self, y, samples):
        """(N,) for the targets and (N,S) for the samples: the sampled softmax's ``extra``."""
        from elman.fast import windows     # Numba takes 0.3 s to import: only sampled runs pay it
        return gather_targets(self.D, self.O, y), windows.gather_shared(self.D, self.O, samples)

    def dense_terms(self):
        """(N,V) word terms and (N,K) class terms (None without classes): all of them."""
        return dense_terms(self, len(self.O))

    # -- backward: dJ/dD from the logits' gradients
    def _grad(self, bound, sparse):
        return DirectGrad(self.D.size, self.D.dtype, bound * self.O.shape[1], sparse)

    def grad(self, deltas, sparse: bool):
        """dJ/dD from the logits' gradient in any form of ``core.outputs``
        (``ChunkDeltas``, ``BlockDeltas``, ``ColumnDeltas``): dense, or as
        ``SparseGrad`` cells when ``sparse`` and few are touched."""
        forms = {ChunkDeltas: self._chunks, BlockDeltas: self._blocks, ColumnDeltas: self._columns}
        return forms[type(deltas)](deltas, sparse)

    def _chunks(self, deltas: ChunkDeltas, sparse: bool):
        """dJ/dz2[:, c] = D_c ⊙ w, gathered into one (N,V) block first."""
        N, F = self.O.shape
        dz = scratch.empty("direct dz", (N, self.V), self.D.dtype)
        for c, Dc in deltas.parts:
            np.multiply(Dc, deltas.w[:, None], out=dz[:, c])
        g = self._grad(N * self.V, sparse)
        return self._finish(g, lambda: g.windows(self.O, 0, dz))

    def _blocks(self, deltas: BlockDeltas, sparse: bool):
        parts = deltas.parts
        g = self._grad(sum(dz.size for *_, dz in parts), sparse)

        def scatter():
            for space, rows, c, dz in parts:
                O = self.Oc if space == "classes" else self.O
                g.windows(O if rows is None else O[rows], c.start, dz)
        return self._finish(g, scatter)

    def _columns(self, deltas: ColumnDeltas, sparse: bool):
        """The targets' and the samples' columns only."""
        y, samples, dtrue, dO = deltas
        g = self._grad(dO.size + dtrue.size, sparse)

        def scatter():
            for f in range(self.O.shape[1]):
                g.points(self.O[:, f] + y, dtrue)
            g.shared(self.O, samples, dO)
        return self._finish(g, scatter)

    @staticmethod
    def _finish(g, scatter):
        try:
            scatter()
        except BaseException:
            g.reset()
            raise
        return g.result()
