"""Direct connections hashed as Mikolov's RNNLM hashes them (``rnnlmlib.cpp``,
``computeNet``), so that RNNME models read and write without retraining.

RNNLM's direct order N gives N features per position, a = 0..N-1: the
empty context (a per-class and per-word bias) and the a words x(t),
x(t-1), ..., x(t-a+1). The table D (M,) has two halves, h = M // 2 (the
C's ``direct_size/2``). With P the 36 primes of ``PRIMES`` and arithmetic
as the C does it (products of two ``unsigned int`` wrap mod 2^32, sums of
``unsigned long long`` mod 2^64):

    S_a      = Σ_{b=1..a} P[(a·P[b] + b) mod 2^32 mod 36] · (x(t-b+1) + 1)
    oc_a     = (P[0]·P[1] mod 2^32 + S_a) mod h                 class part
    ow_a(k)  = (P[0]·P[1] mod 2^32 · (k+1) + S_a) mod h + h     word part, target class k

Class c's logit adds D[oc_a + c]; the j-th word of class k (elman's id
bounds[k] + j: classes are ranges of ids) adds D[ow_a(k) + j]. A feature
whose offset is 0 ends the sum (``if (hash[b]) ... else break``): it and
every higher one are off (only class offsets can be 0: word offsets are at
least h). In the word part the C steps each offset by one per word modulo
M, and an offset that reaches M becomes 0 and ends the sum the same way:
so feature a reads word j only while j < M - max_{b<=a} ow_b(k) (``limits``;
no read ever wraps round). The history starts as word 0 (RNNLM's </s>),
so "none" (-1) is hashed as word 0; ids are RNNLM's word indices (import
and export keep them: </s> is id 0, each class a range in order).

A word out of RNNLM's vocabulary is -1 in its history, and feature a is
not formed when x(t-a+1) is -1 (``if (history[a-1]==-1) break``): it and
every higher one are off, in both parts (``live``). elman reads such a
word as an id of its own, ``oov`` (the <unk> an import adds to a
vocabulary without one; Params.direct_oov); None: every id is RNNLM's.
"""
from __future__ import annotations

import numpy as np

PRIMES = (108641969, 116049371, 125925907, 133333309, 145678979, 175308587, 197530793, 234567803, 251851741,
          264197411, 330864029, 399999781, 407407183, 459258997, 479012069, 545678687, 560493491, 607407037,
          629629243, 656789717, 716048933, 718518067, 725925469, 733332871, 753085943, 755555077, 782715551,
          790122953, 812345159, 814814293, 893826581, 923456189, 940740127, 953085797, 985184539, 990122807)
MAX_ORDER = 20
_U32 = (1 << 32) - 1
BASE = (PRIMES[0] * PRIMES[1]) & _U32


def check(D, order, V: int, K: int = 0) -> None:
    """ValueError unless D (M,) and order (1,) make RNNLM-hashed direct connections for V words, K classes."""
    if D.ndim != 1 or D.dtype.kind != "f":
        raise ValueError(f"tensor D must be a 1-D float array, got {D.dtype} of shape {D.shape}")
    if np.shape(order) != (1,) or np.asarray(order).dtype.kind not in "iu" or not 1 <= order[0] <= MAX_ORDER:
        raise ValueError(f"direct_order must be one integer from 1 to {MAX_ORDER}, got {order}")
    if D.size < 2 or D.size - D.size // 2 < K:
        raise ValueError(f"tensor D has {D.size} weights: RNNLM's hashing needs half of them ({D.size // 2}) "
                         f"to hold the {K} class windows")


def prime(a: int, b: int) -> int:
    """P[(a·P[b] + b) mod 36], the C's unsigned int arithmetic."""
    return PRIMES[((((a * PRIMES[b]) & _U32) + b) & _U32) % len(PRIMES)]


def sums(ctx, order: int) -> np.ndarray:
    """(T*B, order) uint64: S_a of each position (rows time-major, t*B + b)
    for ``ctx`` (B, order-2+T) from ``core.direct.contexts``."""
    n = max(order - 2, 0)
    ctx = np.asarray(ctx, np.int64)
    B, T = ctx.shape[0], ctx.shape[1] - n
    words = (np.maximum(ctx, 0) + 1).astype(np.uint64)          # none (-1) is word 0, RNNLM's start
    S = np.zeros((T, B, order), np.uint64)
    for a in range(1, order):
        for b in range(1, a + 1):                                # x(t-b+1): column n + t - b + 1
            S[:, :, a] += np.uint64(prime(a, b)) * words[:, n + 1 - b:n + 1 - b + T].T
    return S.reshape(T * B, order)


def live(ctx, order: int, oov=None) -> np.ndarray:
    """(T*B, order) bool, rows as ``sums``': live[:, a] unless one of
    x(t), ..., x(t-a+1) is the id ``oov`` (RNNLM's -1); None: all live."""
    n = max(order - 2, 0)
    ctx = np.asarray(ctx, np.int64)
    B, T = ctx.shape[0], ctx.shape[1] - n
    out = np.ones((T, B, order), bool)
    if oov is not None:
        for a in range(1, order):                                # x(t-a+1): column n + t - a + 1
            out[:, :, a] = out[:, :, a - 1] & (ctx[:, n + 1 - a:n + 1 - a + T] != oov).T
    return out.reshape(T * B, order)


def class_offsets(S, M: int, alive=None) -> tuple:
    """(offsets (N,F) int64 in [0, h), on (N,F) bool): the class part;
    ``alive`` (N,F) from ``live`` (None: all)."""
    O = ((np.uint64(BASE) + S) % np.uint64(M // 2)).astype(np.int64)
    nonzero = O != 0 if alive is None else (O != 0) & alive
    return O, np.logical_and.accumulate(nonzero, axis=1)


def word_offsets(S, M: int, k, alive=None) -> tuple:
    """(offsets (N,F) int64 in [h, M), limits (N,F)): target class k's word
    part (k an int, or (N,): each row's own); feature a reads the class's
    j-th word while j < limits[:, a] (0 where ``alive`` is not: the
    features past an out-of-vocabulary word)."""
    h = M // 2
    k1 = np.asarray(k, np.uint64) + np.uint64(1)
    O = ((np.uint64(BASE) * (k1[:, None] if k1.ndim else k1) + S) % np.uint64(h)).astype(np.int64) + h
    lim = M - np.maximum.accumulate(O, axis=1)
    return O, lim if alive is None else np.where(alive, lim, 0)


# ---------------------------------------------------- reference (as core.layers)


def class_forward(S, D, K: int, alive=None):
    """Zc[n, c] = Σ_a on[n,a] D[oc[n,a] + c]   (N,K)."""
    O, on = class_offsets(S, D.size, alive)
    Zc = (D[O[:, :, None] + np.arange(K)] * on[:, :, None]).sum(axis=1)
    return Zc, (O, on, D.shape, K)


def class_backward(dZc, cache):
    """dJ/dD[oc[n,a] + c] += on[n,a] dJ/dZc[n, c]   (M,)"""
    O, on, shape, K = cache
    dD = np.zeros(shape, dZc.dtype)
    np.add.at(dD, O[:, :, None] + np.arange(K), dZc[:, None, :] * on[:, :, None])
    return dD


def word_forward(S, D, bounds, alive=None):
    """Zw[n, w] = Σ_a [j < lim_a] D[ow_a(k) + j] for w = bounds[k] + j   (N,V)."""
    Zw = np.zeros((len(S), int(bounds[-1])), D.dtype)
    for k in range(len(bounds) - 1):
        O, lim = word_offsets(S, D.size, k, alive)
        j = np.arange(bounds[k + 1] - bounds[k])
        on = j < lim[:, :, None]
        Zw[:, bounds[k]:bounds[k + 1]] = (D[np.minimum(O[:, :, None] + j, D.size - 1)] * on).sum(axis=1)
    return Zw, (S, D.shape, bounds, alive)


def word_backward(dZw, cache):
    """dJ/dD[ow_a(k) + j] += [j < lim_a] dJ/dZw[n, bounds[k] + j]   (M,)"""
    S, shape, bounds, alive = cache
    dD = np.zeros(shape, dZw.dtype)
    for k in range(len(bounds) - 1):
        O, lim = word_offsets(S, shape[0], k, alive)
        j = np.arange(bounds[k + 1] - bounds[k])
        on = j < lim[:, :, None]
        idx = np.minimum(O[:, :, None] + j, shape[0] - 1)
        np.add.at(dD, idx, dZw[:, None, bounds[k]:bounds[k + 1]] * on)
    return dD
