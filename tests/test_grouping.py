"""The compiled grouping of a window's rows by class (``fast.grouping``)
against the same arrays built by NumPy's stable sort."""
import numpy as np
import pytest

from elman.fast.grouped import Plan
from elman.fast.grouping import plan_arrays


def numpy_plan(seg, bounds):
    """Plan's arrays the NumPy way: a stable argsort, then each group's runs."""
    order = np.argsort(seg, kind="stable")
    ss = seg[order]
    cuts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1], True])
    present = ss[cuts[:-1]]
    a, b = bounds[present], bounds[present + 1]
    n, w = np.diff(cuts), b - a
    off = np.concatenate([[0], np.cumsum(n * w)])
    coff = np.concatenate([[0], np.cumsum(w)])
    width = np.repeat(w, n)
    start = np.repeat(off[:-1] - cuts[:-1] * w, n) + np.arange(len(seg)) * width
    return order, cuts, a, b, off, coff, width, start, np.repeat(a, n)


@pytest.mark.parametrize("N,K,seed", [(640, 50, 0), (640, 900, 1), (1, 5, 2), (37, 1, 3), (300, 3, 4)])
def test_plan_arrays_are_numpys(N, K, seed):
    rng = np.random.default_rng(seed)
    bounds = np.r_[0, np.sort(rng.choice(np.arange(1, 10 * K), K - 1, replace=False)), 10 * K].astype(np.int64)
    seg = rng.integers(0, K, N) if seed % 2 else np.minimum(rng.geometric(0.2, N) - 1, K - 1)
    got, want = plan_arrays(seg, bounds), numpy_plan(seg, bounds)
    for name, g, w in zip("order cuts a b off coff width start col".split(), got, want):
        assert g.dtype == np.int64 and np.array_equal(g, w), name
    plan = Plan(seg, bounds)
    assert plan.groups == len(np.unique(seg)) and np.array_equal(seg[plan.order], np.sort(seg))


def test_a_segment_outside_the_classes_is_refused():
    with pytest.raises(ValueError, match="outside the classes"):
        plan_arrays(np.array([0, 3]), np.array([0, 2, 5]))
    with pytest.raises(ValueError, match="outside the classes"):
        plan_arrays(np.array([-1]), np.array([0, 2, 5]))
