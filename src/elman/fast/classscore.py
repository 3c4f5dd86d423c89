"""A class softmax's losses for scoring, compiled: no gradient, no cache.

    J_n = -log softmax(zc_n)[c_n] - log softmax(z_n[a:b])[y_n - a]
    zc_n = h_n Uc + bc + Σ_f D[Oc[n,f] + (0..K)]                    (K,)
    z_n[w] = h_n U[:, w] + b2[w] + Σ_f D[O[n,f] + w],   a <= w < b     the class [a, b) of y_n

the function of ``core.classes`` (``class_log_probs``, the reference the
tests hold this to) at one target a row. The class logits of a window are
one BLAS product; the rest is one compiled loop over the rows: the direct
terms of the K classes and of the target's class only (the K + |c(y)|
logits a row needs, each read once from D), the within-class products from
the word-major [U; b2] (``Params`` keeps word w's column and bias as one
contiguous row of Dh+1 floats), and both log-sum-exps in float64. Training's
path (``fast.grouped``) groups the rows by class to share each class's
columns between rows for the gradient too; a scoring row needs only its
own |c(y)| dot products (20 on average at V = 10k, K = 100), for which the
grouping, its sort and its Python loop over groups cost more than they save.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from elman.core.params import stacked_bias


@njit(cache=True, nogil=True, fastmath=True)
def _losses(h, W, zc, cls, y, bounds, D, O, Oc, out):
    N, Dh = h.shape
    K, F = zc.shape[1], O.shape[1]
    widest = 0
    for c in range(K):
        widest = max(widest, bounds[c + 1] - bounds[c])
    zw = np.empty(max(widest, K), np.float64)
    for n in range(N):
        m = -np.inf
        for k in range(K):
            v = np.float64(zc[n, k])
            for f in range(F):
                v += D[Oc[n, f] + k]
            zw[k] = v
            m = max(m, v)
        s = 0.0
        for k in range(K):
            s += np.exp(zw[k] - m)
        loss = m + np.log(s) - zw[cls[n]]
        a, b = bounds[cls[n]], bounds[cls[n] + 1]
        hn = h[n]
        m = -np.inf
        for w in range(a, b):
            row = W[w]
            v = row[Dh]
            for i in range(Dh):
                v += hn[i] * row[i]
            u = np.float64(v)
            for f in range(F):
                u += D[O[n, f] + w]
            zw[w - a] = u
            m = max(m, u)
        s = 0.0
        for w in range(b - a):
            s += np.exp(zw[w] - m)
        out[n] = loss + m + np.log(s) - zw[y[n] - a]


def class_losses(h, U, b2, Uc, bc, bounds, y, direct=None):
    """-log P(y_n | h_n) (N,) float64 under the class softmax of ``core.classes``.
    ``direct`` = (D, O, Oc): the table and the rows' offsets (N,F) into its
    word and class windows (``core.direct.offsets``); None: none. Reads
    [U; b2] word by word, as ``Params`` keeps it."""
    Ub = stacked_bias(U, b2)
    if Ub is None or Ub.strides[1] < Ub.strides[0]:
        raise ValueError("class_losses reads [U; b2] word by word: give Params' U and b2")
    h = np.ascontiguousarray(h)
    y = np.asarray(y, np.int64)
    zc = h @ Uc
    zc += bc
    cls = np.searchsorted(bounds, y, side="right") - 1
    if direct is None:
        none = np.zeros((len(y), 0), np.int64)
        direct = (np.zeros(1, h.dtype), none, none)
    D, O, Oc = direct
    out = np.empty(len(y), np.float64)
    _losses(h, Ub.T, zc, cls, y, np.asarray(bounds, np.int64), D, np.ascontiguousarray(O), np.ascontiguousarray(Oc), out)
    return out
