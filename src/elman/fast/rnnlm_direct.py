"""Direct connections hashed RNNLM's way (``core.rnnlm_direct``) behind the
interface of ``fast.direct.Features``: the terms the output layers add to
their logits, and dJ/dD from the logits' gradients (the tests hold both to
``core.rnnlm_direct``'s reference forms). A word's window depends on its
class (RNNLM hashes the target's class into it), so the word terms are
gathered class by class; scoring, which needs only each row's target
class, hands ``fast.classscore``'s compiled loop one window a row and
feature (``scoring_terms``). The sampled softmax, whose samples cross
classes, is refused.
"""
from __future__ import annotations

import numpy as np

from elman.core import rnnlm_direct as rd
from elman.core.outputs import BlockDeltas, ChunkDeltas, ColumnDeltas
from elman.errors import ElmanError
from elman.fast.direct import DirectGrad, dense_terms


class RnnlmFeatures:
    """The RNNLM-hashed direct features of one window: table D (M,), RNNLM
    order N, V words in classes ``bounds`` (K+1,) (None: one class of all
    V, a full softmax), ``ctx`` (B, N-2+T) from ``core.direct.contexts``,
    ``oov``: the id that is out of RNNLM's vocabulary (None: none is)."""

    def __init__(self, D, order: int, V: int, bounds, ctx, oov=None):
        self.D, self.V, self.M = D, V, D.size
        self.bounds = np.array([0, V]) if bounds is None else np.asarray(bounds)
        self.K = 0 if bounds is None else len(self.bounds) - 1
        self.S, self.alive = rd.sums(ctx, order), rd.live(ctx, order, oov)
        self.Oc, self.on = rd.class_offsets(self.S, self.M, self.alive) if self.K else (None, None)
        self._words = {}

    def _word(self, k: int):
        if k not in self._words:
            self._words[k] = rd.word_offsets(self.S, self.M, k, self.alive)
        return self._words[k]

    def _class_cells(self, c, rows):
        """(idx (n,F,w), on (n,F,w)) of class columns c."""
        O, on = (self.Oc, self.on) if rows is None else (self.Oc[rows], self.on[rows])
        return O[:, :, None] + np.arange(c.start, c.stop), np.broadcast_to(on[:, :, None], (*O.shape, c.stop - c.start))

    def _word_cells(self, c, rows):
        """[(columns of z, idx (n,F,w), on (n,F,w))] for each class that word columns c cross."""
        out = []
        for k in range(np.searchsorted(self.bounds, c.start, "right") - 1, len(self.bounds) - 1):
            lo, hi = max(c.start, self.bounds[k]), min(c.stop, self.bounds[k + 1])
            if lo >= hi:
                break
            O, lim = self._word(k)
            if rows is not None:
                O, lim = O[rows], lim[rows]
            j = np.arange(lo - self.bounds[k], hi - self.bounds[k])
            out.append((slice(lo - c.start, hi - c.start), np.minimum(O[:, :, None] + j, self.M - 1),
                        j < lim[:, :, None]))
        return out

    # -- forward: the hooks of the output layers
    def add_words(self, z, c, rows=None) -> None:
        for cols, idx, on in self._word_cells(c, rows):
            z[:, cols] += np.where(on, self.D[idx], 0).sum(axis=1)

    def add_classes(self, z, c, rows=None) -> None:
        idx, on = self._class_cells(c, rows)
        z += np.where(on, self.D[idx], 0).sum(axis=1)

    def scoring_terms(self, y, rows=None):
        """(D', O, Oc) for ``fast.classscore.class_losses``, whose loop adds
        D'[O[n,f] + w] to each word w of y_n's class and D'[Oc[n,f] + c] to
        each class c: RNNLM's terms of targets ``y`` exactly. D' is D, then
        zeros (where a feature that is off reads), then a copy of each word
        window the table's end cuts, zeros past the cut."""
        rows = slice(None) if rows is None else rows
        k = np.searchsorted(self.bounds, np.asarray(y), "right") - 1
        width = np.diff(self.bounds)[k][:, None]
        start, lim = rd.word_offsets(self.S[rows], self.M, k, self.alive[rows])
        pad = max(int(width.max(initial=0)), self.K)
        start = np.where(lim > 0, start, self.M)
        table = [self.D, np.zeros(pad, self.D.dtype)]
        n, f = np.nonzero((lim > 0) & (lim < width))
        if len(n):                       # rare: a window within a class's width of the table's end
            table += [np.r_[self.D[s:s + m], np.zeros(w - m, self.D.dtype)]
                      for s, m, w in zip(start[n, f], lim[n, f], width[n, 0])]
            start[n, f] = self.M + pad + np.r_[0, np.cumsum(width[n, 0])[:-1]]
        Oc = None if not self.K else np.where(self.on[rows], self.Oc[rows], self.M)
        return np.concatenate(table), start - self.bounds[k][:, None], Oc

    def sampled_terms(self, y, samples):
        raise ElmanError("direct connections hashed RNNLM's way need a class or full softmax, not a sampled one")

    def dense_terms(self):
        """(N,V) word terms and (N,K) class terms (None without classes)."""
        return dense_terms(self, len(self.S))

    # -- backward
    def grad(self, deltas, sparse: bool):
        """dJ/dD from ``ChunkDeltas`` or ``BlockDeltas``: dense, or
        ``SparseGrad`` cells when ``sparse`` and few are touched."""
        if isinstance(deltas, ColumnDeltas):
            self.sampled_terms(None, None)
        if isinstance(deltas, ChunkDeltas):
            dz = np.zeros((len(self.S), self.V), self.D.dtype)
            for c, Dc in deltas.parts:
                dz[:, c] = Dc * deltas.w[:, None]
            parts = [("words", None, slice(0, self.V), dz)]
        else:
            parts = deltas.parts
        g = DirectGrad(self.M, self.D.dtype, sum(dz.size for *_, dz in parts) * self.S.shape[1], sparse)
        try:
            for space, rows, c, dz in parts:
                cells = ([(slice(None), *self._class_cells(c, rows))] if space == "classes"
                         else self._word_cells(c, rows))
                for cols, idx, on in cells:
                    vals = np.broadcast_to(dz[:, None, cols], idx.shape)
                    g.points(idx[on], vals[on])
        except BaseException:
            g.reset()
            raise
        return g.result()
