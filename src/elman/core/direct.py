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
