"""Compiled update rules: SGD's and Adagrad's, in one pass over the entries.

``training.rules``' rules (the reference, which the tests hold these to
the bit) are NumPy expressions: Adagrad's is five element-wise passes with
temporaries, and a sparse gradient's rows or columns are first copied out
of the parameter and its state through the index, then put back (three
passes of fancy indexing each). At V = 10k a class softmax's columns are
2M entries a step, and the recipe's direct weights 640k scattered cells:
the updates cost more than the output layer's products. Here each entry is
read and written once, through the index where there is one:

    SGD      p <- p - lr·g
    Adagrad  G <- G + g·g;   p <- p - (lr·g) / (sqrt(G) + eps)

in the dtype of the arrays (float32 stays float32), the operations in the
reference's order and with no fast-math, so the results are its bits.
NumPy's error model (a division by zero is IEEE's, as in NumPy, not an
exception) and each row taken as a slice (an index computed from a row
offset may be negative, for all the compiler knows, and wraps around) let
the compiler turn the inner loops into vector instructions: otherwise they
run one entry at a time, 4-6x slower.

Arrays are seen as rows: ``P`` (R,w) with its unit stride along w (U's
columns are rows of its memory, ``core.params``), ``vals`` (C,w), ``idx``
(C,) the rows of P they update (sorted and unique: no row twice, so the
cores may share the ids). ``rows_of`` makes that view of a parameter.
"""
from __future__ import annotations

import numpy as np
from numba import njit
from numpy.lib.stride_tricks import as_strided

# Entries a block of rows holds when the cores share a big update (U's
# columns: 2M entries at V = 10k): a thread's part stays a few hundred KB.
BLOCK = 1 << 16


@njit(cache=True, nogil=True, error_model="numpy")
def adagrad_rows(P, ps, G, gs, vals, vs, idx, n, w, lr, eps):
    """For k < n, r = idx[k] (k itself when idx is None):
    G[r] += vals[k]²;  P[r] -= (lr·vals[k]) / (sqrt(G[r]) + eps);
    rows in flat spans (``flat``): row r of P is P[r·ps : r·ps + w]."""
    for k in range(n):
        r = k if idx is None else idx[k]
        Pr, Gr, Vr = P[r * ps:r * ps + w], G[r * gs:r * gs + w], vals[k * vs:k * vs + w]
        for j in range(w):
            g = Vr[j]
            a = Gr[j] + g * g
            Gr[j] = a
            Pr[j] -= (g * lr) / (np.sqrt(a) + eps)


@njit(cache=True, nogil=True, error_model="numpy")
def sgd_rows(P, ps, vals, vs, idx, n, w, lr):
    """For k < n, r = idx[k] (or k): P[r] -= vals[k]·lr, rows as ``adagrad_rows``'."""
    for k in range(n):
        r = k if idx is None else idx[k]
        Pr, Vr = P[r * ps:r * ps + w], vals[k * vs:k * vs + w]
        for j in range(w):
            Pr[j] -= Vr[j] * lr


def flat(a):
    """A 2-D array (R,w) whose entries along w are adjacent in memory, as
    (1-D array from its first entry to its last, row stride in entries):
    the compiled loops then index one contiguous span, and their inner loop
    is a contiguous run the compiler turns into vector instructions (with
    the strides of a general view it stays one entry at a time). None when
    the entries along w are not adjacent or the rows overlap or run backwards."""
    R, w = a.shape
    size = a.itemsize
    if a.size == 0:
        return np.zeros(0, a.dtype), w
    if a.flags.c_contiguous:
        return a.reshape(-1), w
    if (w > 1 and a.strides[1] != size) or (R > 1 and (a.strides[0] < w * size or a.strides[0] % size)):
        return None
    rs = a.strides[0] // size if R > 1 else w
    return as_strided(a, shape=((R - 1) * rs + w,), strides=(size,)), rs


def rows_of(a, axis):
    """``a`` as (R,w) rows along ``axis`` (0 or -1) of a 1-D or 2-D array:
    a view, no copy. A 1-D array is R rows of one entry; with axis None
    (a dense 1-D gradient) one row of them all."""
    if a.ndim == 1:
        return a[None, :] if axis is None else a[:, None]
    return a if axis == 0 else a.T


def dense_axis(p):
    """The axis of a dense parameter whose rows are runs of memory: the one
    with the larger stride (U's words, ``core.params``); None for 1-D."""
    if p.ndim == 1:
        return None
    return 0 if p.strides[0] >= p.strides[1] else -1


def _vals(vals):
    """``vals`` (C,w) flat, copied into order when its rows are not runs."""
    got = flat(vals)
    return got if got is not None else flat(np.ascontiguousarray(vals))


def adagrad(P, G, vals, idx, lr: float, eps: float) -> bool:
    """Adagrad on rows (``rows_of`` views) of P and G; False (nothing done)
    when their layout is not one the compiled loop takes."""
    fp, fg = flat(P), flat(G)
    if fp is None or fg is None or not compiled(P, G, vals):
        return False
    dt = P.dtype.type
    v, vs = _vals(vals)
    adagrad_rows(fp[0], fp[1], fg[0], fg[1], v, vs, idx, vals.shape[0], vals.shape[1], dt(lr), dt(eps))
    return True


def sgd(P, vals, idx, lr: float) -> bool:
    """P[idx] -= lr·vals on rows of P; False when P's layout is not one the compiled loop takes."""
    fp = flat(P)
    if fp is None or not compiled(P, vals):
        return False
    v, vs = _vals(vals)
    sgd_rows(fp[0], fp[1], v, vs, idx, vals.shape[0], vals.shape[1], P.dtype.type(lr))
    return True


def compiled(*arrays) -> bool:
    """Whether the compiled rules take these arrays: float32 or float64, all of one dtype."""
    dt = arrays[0].dtype
    return dt in (np.float32, np.float64) and all(a.dtype == dt for a in arrays)


__all__ = ["adagrad", "sgd", "adagrad_rows", "sgd_rows", "flat", "rows_of", "dense_axis", "compiled"]
