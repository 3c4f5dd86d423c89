"""Compiled line sums against NumPy's own sum of each line's array."""
from __future__ import annotations

import numpy as np
import pytest

from elman.fast.linesums import line_sums


@pytest.mark.parametrize("seed", range(3))
def test_each_line_is_numpys_sum_of_it_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    lengths = np.concatenate([np.arange(0, 140), rng.integers(0, 3000, 40), [1024, 1025, 4096, 10_001]])
    rng.shuffle(lengths)
    # values of many magnitudes and both signs: a different order of adding changes the last bits
    x = rng.standard_normal(lengths.sum()) * 10.0 ** rng.integers(-6, 6, lengths.sum())
    got = line_sums(x, lengths)
    cuts = np.cumsum(lengths)[:-1]
    want = np.array([part.sum() for part in np.split(x, cuts)])
    assert got.dtype == np.float64 and np.array_equal(got, want)
    naive = np.array([sum(part.tolist()) for part in np.split(x, cuts)])
    assert not np.array_equal(naive, want)       # the test tells summation orders apart


def test_signed_zeros_empty_lines_and_bad_lengths():
    got = line_sums(np.array([-0.0, -0.0, 1.5]), [2, 0, 1])
    assert got.tolist() == [0.0, 0.0, 1.5] and not np.signbit(got[0])   # np.sum([-0., -0.]) is +0.0
    with pytest.raises(ValueError, match="sum to 2, not the 3"):
        line_sums(np.zeros(3), [1, 1])
