"""The recurrence's time loop compiled: h(t) = sigmoid(h(t-1) H + a(t)) for
every step of a window in one call, for scoring (no gradient is kept).

Step by step in NumPy each h(t) costs four calls (a product, an add, the
sigmoid's tanh and its scaling) whose fixed costs, about 2 µs each, are
most of a step for one stream at Dh = 200 (40k multiply-adds); the loop
below does the step's product and sigmoid with no call at all. The product
is taken as Dh dot products of contiguous rows of Hᵀ, four at a time (each
load of h(t-1) serves four sums; the column form, z += h_i H[i], stores z
back once per i and took a third longer); rows of a batch (lines scored
each from its own start, the prefixes of n-best lists) go four at a time
(``_product4``), each load then serving four rows too. Its sigmoid is 1 / (1 + exp(-z)),
z clipped at ±80 (sigmoid(-80) is 2e-35, the reference's tanh form gives 0
there); in float32 the exp is Cephes' expf written out (``_sigmoid``),
which the compiler puts in vector registers where libm's exp is a call per
element, a quarter of a step. It runs without the GIL, so it runs beside
the output layer of the window before (``model.window_losses``). The same
function as ``core.layers.rnn_step_forward`` step by step, equal to
rounding (its sums are taken in another order than BLAS's:
tests/test_scan.py).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(inline="always")
def dot4(x, r0, r1, r2, r3, n):
    """(x·r0, x·r1, x·r2, x·r3) over the first n entries in one pass, each
    load of x serving four contiguous rows (the form that keeps a product's
    loads lowest; the column form, z += x_i H[i], stores z back once per i
    and took a third longer). Sums in the rows' dtype."""
    s0 = s1 = s2 = s3 = r0.dtype.type(0)
    for i in range(n):
        xi = x[i]
        s0 += xi * r0[i]
        s1 += xi * r1[i]
        s2 += xi * r2[i]
        s3 += xi * r3[i]
    return s0, s1, s2, s3


@njit(cache=True, nogil=True, fastmath=True)
def _product(HT, prev, a, z):
    """z = prev H + a, H given as HT = Hᵀ (Dh,Dh) contiguous: each z[j] a dot
    product of two contiguous rows, four at a time (``dot4``)."""
    Dh = HT.shape[0]
    j = 0
    while j + 4 <= Dh:
        s0, s1, s2, s3 = dot4(prev, HT[j], HT[j + 1], HT[j + 2], HT[j + 3], Dh)
        z[j], z[j + 1], z[j + 2], z[j + 3] = s0 + a[j], s1 + a[j + 1], s2 + a[j + 2], s3 + a[j + 3]
        j += 4
    for jj in range(j, Dh):
        s0 = a[jj]
        for i in range(Dh):
            s0 += prev[i] * HT[jj, i]
        z[jj] = s0


@njit(inline="always")
def _madd4(x, w0, w1, w2, w3, s0, s1, s2, s3):
    """(s0 + x·w0, s1 + x·w1, s2 + x·w2, s3 + x·w3): one row's step of a 4×4 block of sums."""
    return s0 + x * w0, s1 + x * w1, s2 + x * w2, s3 + x * w3


@njit(cache=True, nogil=True, fastmath=True)
def _product4(HT, prev, a, z):
    """z[r] = prev[r] H + a[r] for the four rows r of ``prev`` (4,Dh) at
    once: a 4×4 block of sums, so that each load of a row of Hᵀ serves four
    rows and each load of a row's h(t-1) four columns (half the loads a
    multiply-add of ``_product``'s; a row of lines scored as a batch costs
    about 1.0 µs a step at Dh = 200 against 1.75 row by row, one core of a
    2-core Xeon, 2026-12-06)."""
    Dh = HT.shape[0]
    p0, p1, p2, p3 = prev[0], prev[1], prev[2], prev[3]
    j = 0
    while j + 4 <= Dh:
        r0, r1, r2, r3 = HT[j], HT[j + 1], HT[j + 2], HT[j + 3]
        s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = z.dtype.type(0)
        s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = z.dtype.type(0)
        for i in range(Dh):
            w0, w1, w2, w3 = r0[i], r1[i], r2[i], r3[i]
            s00, s01, s02, s03 = _madd4(p0[i], w0, w1, w2, w3, s00, s01, s02, s03)
            s10, s11, s12, s13 = _madd4(p1[i], w0, w1, w2, w3, s10, s11, s12, s13)
            s20, s21, s22, s23 = _madd4(p2[i], w0, w1, w2, w3, s20, s21, s22, s23)
            s30, s31, s32, s33 = _madd4(p3[i], w0, w1, w2, w3, s30, s31, s32, s33)
        z[0, j], z[0, j + 1], z[0, j + 2], z[0, j + 3] = s00, s01, s02, s03
        z[1, j], z[1, j + 1], z[1, j + 2], z[1, j + 3] = s10, s11, s12, s13
        z[2, j], z[2, j + 1], z[2, j + 2], z[2, j + 3] = s20, s21, s22, s23
        z[3, j], z[3, j + 1], z[3, j + 2], z[3, j + 3] = s30, s31, s32, s33
        j += 4
    for jj in range(j, Dh):
        for r in range(4):
            s = z.dtype.type(0)
            for i in range(Dh):
                s += prev[r, i] * HT[jj, i]
            z[r, jj] = s
    for r in range(4):
        for jj in range(Dh):
            z[r, jj] += a[r, jj]


@njit(cache=True, nogil=True, fastmath=True)
def _sigmoid(z, out, bits):
    """out = 1 / (1 + exp(-z)) in float32, exp by Cephes' expf (range
    reduction by ln 2, a degree-7 polynomial, 2^n from its exponent bits:
    within 2 ulp of the libm call, and in vector registers where the call
    is one element at a time). z clipped to ±80, where sigmoid is 0 (2e-35)
    or 1 in float32; ``bits`` (Dh,) int32 scratch."""
    f = np.float32
    for j in range(z.shape[0]):
        u = min(max(-z[j], f(-80.0)), f(80.0))
        n = np.floor(u * f(1.4426950408889634) + f(0.5))
        r = u - n * f(0.693359375) - n * f(-2.12194440e-4)
        p = f(1.9875691500e-4)
        p = p * r + f(1.3981999507e-3)
        p = p * r + f(8.3334519073e-3)
        p = p * r + f(4.1665795894e-2)
        p = p * r + f(1.6666665459e-1)
        p = p * r + f(5.0000001201e-1)
        out[j] = p * r * r + r + f(1.0)
        bits[j] = (np.int32(n) + np.int32(127)) << np.int32(23)
    scale = bits.view(np.float32)
    for j in range(z.shape[0]):
        out[j] = f(1.0) / (f(1.0) + out[j] * scale[j])


@njit(cache=True, nogil=True, fastmath=True)
def _scan32(HT, a, hs):
    T, B, Dh = a.shape
    z = np.empty((4, Dh), np.float32)
    bits = np.empty(Dh, np.int32)
    for t in range(T):
        for b in range(0, B - B % 4, 4):
            _product4(HT, hs[t, b:b + 4], a[t, b:b + 4], z)
            for r in range(4):
                _sigmoid(z[r], hs[t + 1, b + r], bits)
        for b in range(B - B % 4, B):
            _product(HT, hs[t, b], a[t, b], z[0])
            _sigmoid(z[0], hs[t + 1, b], bits)


@njit(cache=True, nogil=True, fastmath=True)
def _scan(HT, a, hs, one, low):
    T, B, Dh = a.shape
    z = np.empty((4, Dh), a.dtype)
    for t in range(T):
        for b in range(0, B, 4):
            rows = min(4, B - b)
            if rows == 4:
                _product4(HT, hs[t, b:b + 4], a[t, b:b + 4], z)
            else:
                for r in range(rows):
                    _product(HT, hs[t, b + r], a[t, b + r], z[r])
            for r in range(rows):
                out = hs[t + 1, b + r]
                for j in range(Dh):
                    out[j] = one / (one + np.exp(-max(z[r, j], low)))


def scan_forward(H, a, hs):
    """hs[t+1] = sigmoid(hs[t] H + a[t]) for t = 0..T-1, in place.

    H (Dh,Dh), a (T,B,Dh) the inputs' part e I + b1, hs (T+1,B,Dh) with
    hs[0] the state before the window; all one float dtype. Returns hs."""
    if not (H.dtype == a.dtype == hs.dtype) or hs.shape[0] != a.shape[0] + 1 or hs.shape[1:] != a.shape[1:]:
        raise ValueError(f"scan_forward: H {H.dtype}{H.shape}, a {a.dtype}{a.shape}, hs {hs.dtype}{hs.shape}")
    if not hs.flags.c_contiguous:
        raise ValueError("scan_forward writes hs in place: it must be C-contiguous")
    HT, a = np.ascontiguousarray(H.T), np.ascontiguousarray(a)
    if a.dtype == np.float32:
        _scan32(HT, a, hs)
    else:
        _scan(HT, a, hs, a.dtype.type(1.0), a.dtype.type(-80.0))
    return hs
