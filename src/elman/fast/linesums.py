"""Each line's sum of its tokens' log-probabilities, every line of a block
in one compiled call, equal to NumPy's sum of the line's own array.

``elman score`` sums each line alone so that a line's score does not depend
on the block it came in; ``np.split`` and a ``sum`` a line cost about 6 µs
a line in Python calls, 3% of `score --carry --ngram` on KJV (2026-12-06,
a 2-core Xeon). NumPy sums a float64 array pairwise (``pairwise_sum`` in
its ``loops_utils.h.src``): below 8 values in order; up to 128, eight
running sums over the values eight apart, combined as ((0+1)+(2+3)) +
((4+5)+(6+7)), then the rest in order; above, the two halves (the first
a multiple of 8) summed so and added; the reduction adds that to its
identity 0.0. ``_pairwise`` is that algorithm, so the sums are NumPy's,
bit for bit (tests/test_linesums.py holds them to ``np.sum``).
"""
from __future__ import annotations

import numpy as np
from numba import njit

BLOCK = 128             # NumPy's PW_BLOCKSIZE


@njit(cache=True, nogil=True)
def _pairwise(a, lo, n):
    if n < 8:
        s = 0.0
        for i in range(n):
            s += a[lo + i]
        return s
    if n <= BLOCK:
        r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
        r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
        i = 8
        while i < n - n % 8:
            r0 += a[lo + i]
            r1 += a[lo + i + 1]
            r2 += a[lo + i + 2]
            r3 += a[lo + i + 3]
            r4 += a[lo + i + 4]
            r5 += a[lo + i + 5]
            r6 += a[lo + i + 6]
            r7 += a[lo + i + 7]
            i += 8
        s = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            s += a[lo + i]
            i += 1
        return s
    half = n // 2
    half -= half % 8
    return _pairwise(a, lo, half) + _pairwise(a, lo + half, n - half)


@njit(cache=True, nogil=True)
def _sums(x, starts, out):
    for k in range(out.size):
        out[k] = 0.0 + _pairwise(x, starts[k], starts[k + 1] - starts[k])


def line_sums(x, lengths) -> np.ndarray:
    """The sum of each consecutive part of ``x`` (float64) of the given
    ``lengths`` (their total len(x)), each as ``np.sum`` of that part alone."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    starts = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=starts[1:])
    if starts[-1] != x.size:
        raise ValueError(f"line lengths sum to {starts[-1]}, not the {x.size} values")
    out = np.empty(len(lengths), np.float64)
    _sums(x, starts, out)
    return out
