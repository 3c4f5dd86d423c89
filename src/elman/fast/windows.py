"""Compiled gather and scatter of the direct weights' sampled columns, and
their windows added into a class softmax's grouped word logits.

Under sampled softmax each position reads, for each of its F features, the
S sampled columns of its window of D: N*F*S scattered reads a window
(1.3M for B=32, T=20, F=2, S=1000), and the backward pass adds as many
values back. NumPy does each as fancy indexing that materialises an (N, S)
index array per feature and, for the scatter, ``np.add.at``; the loops
below touch each cell once with no temporaries (a micro-benchmark: 6 ms
a window against NumPy's best 17 ms; `elman bench --recipe`: the recipe
from 1.49x to 2.44x the full softmax's training speed, README "Speed"). They are the
same sums as ``core.direct.gather_shared`` and ``DirectGrad.points``, which
stay the reference (tests/test_direct.py compares them).

The samples arrive sorted (``core.sampled.Sampler.draw``), so each row's
reads walk its window forward: this halves the time of both loops.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def gather_shared(D, O, cols):
    """out[n, s] = Σ_f D[O[n, f] + cols[s]]   (N, S)."""
    N, F = O.shape
    S = cols.shape[0]
    out = np.zeros((N, S), D.dtype)
    for n in range(N):
        for f in range(F):
            o = O[n, f]
            for s in range(S):
                out[n, s] += D[o + cols[s]]
    return out


@njit(cache=True, nogil=True)
def scatter_shared(acc, mask, O, cols, dO):
    """acc[O[n, f] + cols[s]] += dO[n, s] for every n, f, s (repeats add up);
    ``mask`` (bool, or size 0 for none) marks the cells touched."""
    N, F = O.shape
    S = cols.shape[0]
    marking = mask.shape[0] > 0
    for n in range(N):
        for f in range(F):
            o = O[n, f]
            for s in range(S):
                m = o + cols[s]
                acc[m] += dO[n, s]
                if marking:
                    mask[m] = True


@njit(cache=True, nogil=True)
def add_rows(flat, D, O, order, start, width, col):
    """For each sorted row r (position n = order[r]) and feature f, in that
    order: flat[start[r] + k] += D[O[n, f] + col[r] + k] for k < width[r].
    A class softmax's word logits (``fast.grouped``'s flat buffer: row r's
    columns [col[r], col[r] + width[r]) at start[r]) take every window at
    once; per element the additions of ``fast.direct.add_windows``, feature
    after feature, so the same sums to the bit."""
    N, F = order.shape[0], O.shape[1]
    for r in range(N):
        n, s, w, c = order[r], start[r], width[r], col[r]
        for f in range(F):
            W = D[O[n, f] + c:]
            for k in range(w):
                flat[s + k] += W[k]
