"""``elman score --per-token``'s records, 'token<TAB>log10 P<NL>' a token,
written by one compiled loop: Python's ``"%s\\t%.7f\\n" % (token, x)``
costs about 0.3 µs a token, as much as scoring a token on one core (a
2-core Xeon, 2026-12-06).

The number is written as Python writes ``%.7f``: the decimal of x·10^7
correctly rounded to an integer, halves to even. x·10^7 is computed in
float64 with its rounding error kept exactly (Dekker's product, no fused
multiply-add needed), so the rounding follows the exact product and not
its float: the digits are Python's, bit for bit (tests/test_records.py
holds them to Python's on random values, halves and numbers next to them).
Values the loop does not write (infinities, NaN, |x| ≥ 4·10^8) are left to
Python's own formatting, the whole block at once.
"""
from __future__ import annotations

import numpy as np
from numba import njit

LIMIT = 4e8           # |x| below it: x·10^7 < 2^52, where the float's spacing is at most 1/2
_SPLIT = 134217729.0  # 2^27 + 1, Veltkamp's splitter


@njit(cache=True, nogil=True)
def _two_product(a, b):
    """(p, e) with p = fl(a·b) and p + e = a·b exactly (Dekker)."""
    p = a * b
    t = _SPLIT * a
    ah = t - (t - a)
    al = a - ah
    t = _SPLIT * b
    bh = t - (t - b)
    bl = b - bh
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


@njit(cache=True, nogil=True)
def _rounded(x):
    """round(x · 10^7) of x ≥ 0 as an exact decimal computation would give it, halves to even."""
    y, e = _two_product(x, 1e7)
    n = np.floor(y)
    t = (y - n) - 0.5
    if t > 0.0 or (t == 0.0 and e > 0.0):
        return np.int64(n) + 1
    if t < 0.0 or e < 0.0:
        return np.int64(n)
    return np.int64(n) + (np.int64(n) & 1)          # an exact half: to even


@njit(cache=True, nogil=True)
def _write(tokens, values, out):
    """Write token i (the bytes of ``tokens`` up to its i-th b'\\n'), a tab,
    values[i] as %.7f and a newline, for each i, into ``out``; returns the length."""
    k = 0
    at = 0
    digits = np.empty(20, np.uint8)
    for i in range(values.shape[0]):
        while tokens[at] != 10:
            out[k] = tokens[at]
            k += 1
            at += 1
        at += 1
        out[k] = 9
        k += 1
        x = values[i]
        if np.signbit(x):
            out[k] = 45
            k += 1
            x = -x
        n = _rounded(x)
        whole, frac = n // 10_000_000, n % 10_000_000
        m = 0
        while True:
            digits[m] = 48 + whole % 10
            whole //= 10
            m += 1
            if whole == 0:
                break
        for j in range(m - 1, -1, -1):
            out[k] = digits[j]
            k += 1
        out[k] = 46
        k += 1
        for j in range(6, -1, -1):
            out[k + j] = 48 + frac % 10
            frac //= 10
        k += 7
        out[k] = 10
        k += 1
    return k


def token_records(tokens: list, values) -> str:
    """``"".join("%s\\t%.7f\\n" % r for r in zip(tokens, values))``; the
    tokens hold no newline (lines are cut at them)."""
    values = np.ascontiguousarray(values, np.float64)
    if not len(values):
        return ""
    if not np.all(np.abs(values) < LIMIT):          # inf, NaN, or too large for the loop's integers
        return "".join(map("%s\t%.7f\n".__mod__, zip(tokens, values.tolist())))
    text = ("\n".join(tokens) + "\n").encode("utf-8")
    out = np.empty(len(text) + 20 * len(values), np.uint8)
    n = _write(np.frombuffer(text, np.uint8), values, out)
    return out[:n].tobytes().decode("utf-8")
