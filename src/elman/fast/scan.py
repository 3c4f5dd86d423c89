"""The recurrence's time loop compiled: h(t) = sigmoid(h(t-1) H + a(t)) for
every step of a window in one call, for scoring (no gradient is kept).

Step by step in NumPy each h(t) costs four calls (a product, an add, the
sigmoid's tanh and its scaling) whose fixed costs, about 2 µs each, are
most of a step for one stream at Dh = 200 (40k multiply-adds); the loop
below does the step's product and sigmoid with no call at all. Its sigmoid
is 1 / (1 + exp(-z)), z clipped at -80 so that exp stays finite (sigmoid(-80)
is 2e-35, the reference's tanh form gives 0 there): compiled, tanh is a
call per element and took two thirds of a step, exp vectorises. It runs
without the GIL, so it can run beside the output layer of the window
before (``model.window_losses``). The same function as
``core.layers.rnn_step_forward`` step by step, equal to rounding (its sums
are taken in another order than BLAS's: tests/test_scan.py).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, fastmath=True)
def _scan(H, a, hs, one, low):
    T, B, Dh = a.shape
    z = np.empty(Dh, a.dtype)
    for t in range(T):
        for b in range(B):
            z[:] = a[t, b]
            prev = hs[t, b]
            for i in range(Dh):
                hi = prev[i]
                row = H[i]
                for j in range(Dh):
                    z[j] += hi * row[j]
            out = hs[t + 1, b]
            for j in range(Dh):
                out[j] = one / (one + np.exp(-max(z[j], low)))


def scan_forward(H, a, hs):
    """hs[t+1] = sigmoid(hs[t] H + a[t]) for t = 0..T-1, in place.

    H (Dh,Dh), a (T,B,Dh) the inputs' part e I + b1, hs (T+1,B,Dh) with
    hs[0] the state before the window; all one float dtype. Returns hs."""
    if not (H.dtype == a.dtype == hs.dtype) or hs.shape[0] != a.shape[0] + 1 or hs.shape[1:] != a.shape[1:]:
        raise ValueError(f"scan_forward: H {H.dtype}{H.shape}, a {a.dtype}{a.shape}, hs {hs.dtype}{hs.shape}")
    if not hs.flags.c_contiguous:
        raise ValueError("scan_forward writes hs in place: it must be C-contiguous")
    t = a.dtype.type
    _scan(np.ascontiguousarray(H), np.ascontiguousarray(a), hs, t(1.0), t(-80.0))
    return hs
