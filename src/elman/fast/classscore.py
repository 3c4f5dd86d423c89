"""A class softmax's losses for scoring, compiled: no gradient, no cache.

    J_n = -log softmax(zc_n)[c_n] - log softmax(z_n[a:b])[y_n - a]
    zc_n = h_n Uc + bc + Σ_f D[Oc[n,f] + (0..K)]                    (K,)
    z_n[w] = h_n U[:, w] + b2[w] + Σ_f D[O[n,f] + w],   a <= w < b     the class [a, b) of y_n

the function of ``core.classes`` (``class_log_probs``, the reference the
tests hold this to) at one target a row: one compiled loop over the rows,
computing the K + |c(y)| logits a row needs (the class logits of ``ROWS``
rows one BLAS product, the direct
terms of the K classes and of the target's class only, each read once from
D, and the within-class products from the word-major [U; b2]: ``Params``
keeps word w's column and bias as one contiguous row of Dh+1 floats), and
both log-sum-exps in float64. The rows go to the threads in tasks of
``ROWS``, the same tasks on one core or many.
The rows go to the tasks in class order (one stable argsort a window), so
the rows of one class follow each other and its words' rows of [U; b2]
(28 KB for a class of 35 words) are read from cache after its first row:
1.59 → 1.47 µs a token on one core (K = 50, 2M direct weights; a 2-core
Xeon, 2026-12-06). Training's
path (``fast.grouped``) goes further, one BLAS product a class present;
for scoring that measured no faster (1.60 µs): its Python loop over the
classes of each task costs what the product saves.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from elman.core.params import stacked_bias
from elman.fast.scan import dot4
from elman.fast.threads import parallel_for


ROWS = 256          # rows a task: the unit the threads share, the same on one core or many


@njit(cache=True, nogil=True, fastmath=True)
def word_logit(row, h, Dh, D, Ot, w):
    """[h, 1]·row + Σ_f D[Ot[f] + w] in float64: word w's logit, row = W[w] (Dh+1,)."""
    v = row[Dh]
    for i in range(Dh):
        v += h[i] * row[i]
    u = np.float64(v)
    for f in range(Ot.shape[0]):
        u += D[Ot[f] + w]
    return u


@njit(cache=True, nogil=True, fastmath=True)
def word_logits(W, h, Dh, D, Ot, a, b, z):
    """z[w - a] = ``word_logit`` of each word a <= w < b: the products four
    words at a time (``fast.scan.dot4``: each load of h serves four rows of
    W), then each direct window added as one run of D."""
    w = a
    while w + 4 <= b:
        r0, r1, r2, r3 = W[w], W[w + 1], W[w + 2], W[w + 3]
        s0, s1, s2, s3 = dot4(h, r0, r1, r2, r3, Dh)
        z[w - a], z[w - a + 1], z[w - a + 2], z[w - a + 3] = s0 + r0[Dh], s1 + r1[Dh], s2 + r2[Dh], s3 + r3[Dh]
        w += 4
    for v in range(w, b):
        row = W[v]
        s = row[Dh]
        for i in range(Dh):
            s += h[i] * row[i]
        z[v - a] = s
    for f in range(Ot.shape[0]):
        run = D[Ot[f] + a:Ot[f] + b]
        for k in range(b - a):
            z[k] += run[k]


@njit(cache=True, nogil=True, fastmath=True)
def _sum_exp(z, n, m, e, bits):
    """Σ exp(z[k] - m) over k < n (each term <= 1), in float64: exp by range
    reduction, u = k ln 2 + r with |r| <= ln 2 / 2, e^r by its Taylor
    polynomial of degree 13 (its remainder below 1e-17) and 2^k from its
    exponent bits: within 3e-14 of libm's exp relatively (measured down to
    e^-700), which is a call per element where this loop runs in vector
    registers. Terms below e^-700 (none of which can
    move a sum >= 1) are taken as e^-700; ``e``, ``bits``: (>= n,) scratch."""
    for k in range(n):
        u = max(z[k] - m, -700.0)
        q = np.floor(u * 1.4426950408889634 + 0.5)
        r = u - q * 0.6931471805599453
        p = 1.0 / 6227020800.0
        p = p * r + 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        e[k] = p * r + 1.0
        bits[k] = (np.int64(q) + np.int64(1023)) << np.int64(52)
    scale = bits.view(np.float64)
    s = 0.0
    for k in range(n):
        s += e[k] * scale[k]
    return s


@njit(cache=True, nogil=True, fastmath=True)
def _lse_loss(z, n, target, e, bits):
    """log Σ exp(z[:n]) - z[target], the sum in float64 (``_sum_exp``)."""
    m = z[0]
    for k in range(1, n):
        m = max(m, z[k])
    return m + np.log(_sum_exp(z, n, m, e, bits)) - z[target]


@njit(cache=True, nogil=True, fastmath=True)
def _losses(h, W, zc, cls, y, bounds, D, O, Oc, out, rows):
    """out[rows[m]] for the rows m of zc (the class logits h Uc + bc of rows ``rows``)."""
    Dh, K = h.shape[1], zc.shape[1]
    widest = 0
    for c in range(K):
        widest = max(widest, bounds[c + 1] - bounds[c])
    zw, e = np.empty(max(widest, K), np.float64), np.empty(max(widest, K), np.float64)
    bits = np.empty(max(widest, K), np.int64)
    for m in range(zc.shape[0]):
        n = rows[m]
        hn = h[n]
        for k in range(K):
            zw[k] = zc[m, k]
        for f in range(Oc.shape[1]):            # a window of D at a time: a loop the compiler vectorises
            base = Oc[n, f]
            for k in range(K):
                zw[k] += D[base + k]
        loss = _lse_loss(zw, K, cls[n], e, bits)
        a, b = bounds[cls[n]], bounds[cls[n] + 1]
        word_logits(W, hn, Dh, D, O[n], a, b, zw)
        out[n] = loss + _lse_loss(zw, b - a, y[n] - a, e, bits)


def class_losses(h, U, b2, Uc, bc, bounds, y, direct=None, beside=None):
    """-log P(y_n | h_n) (N,) float64 under the class softmax of ``core.classes``.
    ``direct`` = (D, O, Oc): the table and the rows' offsets (N,F) into its
    word and class windows (``core.direct.offsets``); None: none. Reads
    [U; b2] word by word, as ``Params`` keeps it. The rows go in tasks of
    ``ROWS`` to the threads (``fast.threads.parallel_for``); ``beside``: a
    function of no arguments run as one more task, first (the next window's
    recurrence). Returns (losses, beside() or None)."""
    out, n, task = class_loss_tasks(h, U, b2, Uc, bc, bounds, y, direct)
    return out, parallel_for(task, n, first=beside)


def class_loss_tasks(h, U, b2, Uc, bc, bounds, y, direct=None):
    """``class_losses`` as (out, n, task): task(i), i in range(n), fills its
    rows of ``out`` (N,); any thread may run any task."""
    Ub = stacked_bias(U, b2)
    if Ub is None or Ub.strides[1] < Ub.strides[0]:
        raise ValueError("class_losses reads [U; b2] word by word: give Params' U and b2")
    h = np.ascontiguousarray(h)
    y = np.asarray(y, np.int64)
    cls = np.searchsorted(bounds, y, side="right") - 1
    if direct is None:
        none = np.zeros((len(y), 0), np.int64)
        direct = (np.zeros(1, h.dtype), none, none)
    D, O, Oc = direct
    args = (cls, y, np.asarray(bounds, np.int64), D, np.ascontiguousarray(O), np.ascontiguousarray(Oc))
    out = np.empty(len(y), np.float64)
    starts = range(0, len(y), ROWS)
    order = np.argsort(cls, kind="stable")     # the rows of a class together: its words' rows of W read once

    def task(i):
        rows = order[starts[i]:starts[i] + ROWS]
        zc = h[rows] @ Uc                 # a BLAS product of ROWS rows: its rows do not depend on the threads
        zc += bc
        _losses(h, Ub.T, zc, *args, out, rows)
    return out, len(starts), task
