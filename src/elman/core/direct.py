"""Direct connections (RNNME): hashed n-gram features added to the output logits.

Mikolov's RNNME adds to the RNN's logits a maximum-entropy model of the
preceding words. With N the order, the position that reads x(t) and
predicts y = x(t+1) has F = N-1 features, one per context length
k = 1..N-1: the k words x(t), x(t-1), ..., x(t-k+1). (The empty context,
k = 0, is the unigram: that is b2 already.) Each feature f owns a window of
V weights in one flat table D (M,), starting at an offset o_f that a hash
of (k, its words) gives, and word w's logit gets the window's w-th weight:

    z2[w] = h U[:, w] + b2[w] + Σ_f D[o_f + w]          o_f in [0, M - V]

So the term is an embedding lookup of several ids at once: the window
starting at o is row o of the (M-V+1, V) matrix Dw whose rows are the
overlapping windows of D (``window_view``), and Σ_f Dw[o_f] is a
multi-hot row times Dw, like e = x L. Its gradient is the embedding's:
dJ/dDw[o] = Σ of δ2 over the (position, feature) pairs that read row o, and
since the rows overlap in D, dJ/dD[m] = Σ_(n,f) δ2[n, m - o_nf] over the
pairs whose window covers m.

The hashing is Mikolov's layout (a hashed offset plus the word id, so one
context's weights are contiguous and the full softmax reads them as
slices) with a better hash: his offset is a linear form Σ_i P_i (w_i + 1)
mod M of the context's ids, so contexts that differ by the same steps in
their ids land at offsets that differ by the same amounts, and collisions
come in families; here each offset is a 64-bit mixing hash (splitmix64's
finaliser) of the order and every word, so offsets behave as independent
uniform draws. Two (context, word) pairs then share a weight with
probability 1/(M-V+1) whatever their ids (the README measures both
schemes' collisions on KJV).

With a class softmax (K classes) the class logits get their own features,
the same contexts hashed with another salt into windows of K weights of
the same table: P(c|h) sees the n-grams too, as in RNNLM.

Words before the start of a stream are -1 ("none"), hashed as their own
value; a window's features need the N-2 words before it (``history``).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from elman.core.sparse import SparseGrad
from elman.fast import scratch

MAX_ORDER = 20                                      # RNNLM's MAX_NGRAM_ORDER
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_GOLDEN = 0x9E3779B97F4A7C15                         # 2^64 / golden ratio: salts and orders apart
_MASK = (1 << 64) - 1
WORDS, CLASSES = 0, 1                               # salts: the word windows, the class windows


def check(D, order, V: int, K: int = 0) -> None:
    """ValueError unless D (M,) and order (1,) make direct connections for V words and K classes."""
    if D.ndim != 1 or D.dtype.kind != "f":
        raise ValueError(f"tensor D must be a 1-D float array, got {D.dtype} of shape {D.shape}")
    if D.size < max(V, K):
        raise ValueError(f"tensor D has {D.size} weights, fewer than the {max(V, K)} of one window")
    if np.shape(order) != (1,) or np.asarray(order).dtype.kind not in "iu" or not 2 <= order[0] <= MAX_ORDER:
        raise ValueError(f"direct_order must be one integer from 2 to {MAX_ORDER}, got {order}")


def _mix(z):
    """splitmix64's finaliser on a uint64 array (in place; wraps mod 2^64)."""
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def contexts(inputs, history, order: int) -> np.ndarray:
    """(B, order-2+T): the ``order-2`` words before the window, then its
    inputs (B,T). ``history`` (B, >= order-2) ids, its last columns taken,
    -1 for none; None: no words before."""
    inputs = np.asarray(inputs, dtype=np.int64)
    B, n = inputs.shape[0], max(order - 2, 0)
    history = np.full((B, n), -1, np.int64) if history is None else np.asarray(history, np.int64)
    if history.ndim != 2 or history.shape[0] != B or history.shape[1] < n:
        raise ValueError(f"direct connections of order {order} need the {n} words before each of the "
                         f"{B} streams, got history of shape {history.shape}")
    return np.concatenate([history[:, history.shape[1] - n:], inputs], axis=1)


def next_history(ctx, order: int) -> np.ndarray:
    """The ``order-2`` words before the next window (the last columns of ``ctx``)."""
    n = max(order - 2, 0)
    return ctx[:, ctx.shape[1] - n:].copy()


def offsets(ctx, order: int, span: int, salt: int = WORDS) -> np.ndarray:
    """(T*B, order-1) int64 offsets in [0, span), rows time-major (t*B + b)
    as in ``model.bptt``; column k-1 is the feature of context length k."""
    n = order - 2
    B, T = ctx.shape[0], ctx.shape[1] - n
    words = (np.asarray(ctx, dtype=np.int64) + 1).astype(np.uint64)      # -1 (none) -> 0
    out = np.empty((T, B, order - 1), dtype=np.int64)
    h = np.full((B, T), (salt * _GOLDEN) & _MASK, dtype=np.uint64)
    for k in range(1, order):                      # extend the context one word further back
        h ^= words[:, n + 1 - k:n + 1 - k + T] + np.uint64((k * _GOLDEN) & _MASK)
        _mix(h)
        out[:, :, k - 1] = (h % np.uint64(span)).astype(np.int64).T
    return out.reshape(T * B, order - 1)


def window_view(D, start: int, width: int):
    """Read-only (M - start - width + 1, width) view: row o is D[start+o : start+o+width]."""
    D = D[start:]
    return as_strided(D, shape=(D.size - width + 1, width), strides=D.strides * 2, writeable=False)


# ---------------------------------------------------- reference (as core.layers)


def direct_forward(O, D, V):
    """Zd = Σ_f D[O[:, f, None] + arange(V)]   (N,V): each row a sum of F windows."""
    Zd = D[O[:, :, None] + np.arange(V)].sum(axis=1)
    return Zd, (O, D.shape, V)


def direct_backward(dZ, cache):
    """dJ/dD[m] = Σ_(n,f) dJ/dZd[n, m - O[n,f]] for 0 <= m - O[n,f] < V   (M,)"""
    O, shape, V = cache
    dD = np.zeros(shape, dtype=dZ.dtype)
    idx = O[:, :, None] + np.arange(V)
    np.add.at(dD, idx, np.broadcast_to(dZ[:, None, :], idx.shape))
    return dD


# ---------------------------------------------------------------- the fast paths


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

    def sampled_terms(self, y, samples):
        """(N,) for the targets and (N,S) for the samples: ``sampled_output_losses``'s extra."""
        from elman.fast import windows     # Numba takes 0.3 s to import: only sampled runs pay it
        return gather_targets(self.D, self.O, y), windows.gather_shared(self.D, self.O, samples)

    def dense_terms(self):
        """(N,V) word terms and (N,K) class terms (None without classes): all of them."""
        zd = np.zeros((len(self.O), self.V), self.D.dtype)
        self.add_words(zd, slice(0, self.V))
        if not self.K:
            return zd, None
        zc = np.zeros((len(self.O), self.K), self.D.dtype)
        self.add_classes(zc, slice(0, self.K))
        return zd, zc

    # -- backward: dJ/dD from the logits' gradients
    def _grad(self, bound, sparse):
        return DirectGrad(self.D.size, self.D.dtype, bound * self.O.shape[1], sparse)

    def full_grad(self, parts, w, sparse: bool):
        """From ``fast.output.output_deltas``: dJ/dz2[:, c] = D_c ⊙ w."""
        N, F = self.O.shape
        dz = scratch.empty("direct dz", (N, self.V), self.D.dtype)
        for c, Dc in parts:
            np.multiply(Dc, w[:, None], out=dz[:, c])
        g = self._grad(N * self.V, sparse)
        return self._finish(g, lambda: g.windows(self.O, 0, dz))

    def class_grad(self, parts, sparse: bool):
        """From ``classes.class_output_deltas``: (kind, rows, c, dz) parts."""
        g = self._grad(sum(dz.size for *_, dz in parts), sparse)

        def scatter():
            for kind, rows, c, dz in parts:
                O = self.Oc if kind == "classes" else self.O
                g.windows(O if rows is None else O[rows], c.start, dz)
        return self._finish(g, scatter)

    def sampled_grad(self, y, samples, dtrue, dO, sparse: bool):
        """From ``sampled.sampled_deltas``: the targets' and the samples' columns only."""
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
