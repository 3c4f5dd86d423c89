"""The class softmax's many small products by compiled calls on NumPy's own
BLAS (``fast.cblas``): NumPy's numbers, bit for bit, for every shape of
group NumPy treats apart (one row, one column, both), and the grouped
layer the same with or without them."""
import numpy as np
import pytest

from elman.core.params import stacked_bias, with_ones, word_major
from elman.fast import cblas

needs_blas = pytest.mark.skipif(not cblas.available(np.float32),
                                reason="NumPy's BLAS here has no ILP64 CBLAS to call (the NumPy loops run instead)")


def test_numpys_own_openblas_is_found():
    """Where NumPy loaded the scipy-openblas64 of its wheels, the calls are used."""
    from threadpoolctl import ThreadpoolController
    paths = [lib.filepath for lib in ThreadpoolController().select(user_api="blas").lib_controllers]
    if not any("scipy_openblas64" in p for p in paths):
        pytest.skip(f"NumPy's BLAS is not scipy-openblas64 here: {paths}")
    assert cblas.available(np.float32) and cblas.available(np.float64)
    assert all(isinstance(a, int) and a > 0 for a in cblas.functions(np.float32))


def groups(rng, dtype, Dh=12):
    """Groups of rows with 1, 2, 5 rows by 1, 7, 43 columns of a word-major
    [U; b2], each combination, in an order that mixes them."""
    shapes = [(n, w) for n in (1, 2, 5) for w in (1, 7, 43)]
    rng.shuffle(shapes)
    n, w = np.array(shapes).T
    V = int(w.sum()) * 2 + 3
    U, b2 = word_major(Dh, V, dtype)
    U[...], b2[...] = rng.standard_normal(U.shape), rng.standard_normal(V)
    first = np.concatenate([[0], np.cumsum(w)[:-1]]) * 2 + 1        # the groups' columns, gaps between
    cuts, off = np.concatenate([[0], np.cumsum(n)]), np.concatenate([[0], np.cumsum(n * w)])
    return U, b2, first, cuts, off, n, w


@needs_blas
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_group_products_are_numpys_bit_for_bit(dtype):
    rng = np.random.default_rng(3)
    U, b2, first, cuts, off, n, w = groups(rng, dtype)
    Dh, G = U.shape[0], len(n)
    Ub = stacked_bias(U, b2)
    hs = with_ones(rng.standard_normal((cuts[-1], Dh)).astype(dtype))
    blas, one, zero = cblas.functions(dtype), dtype(1), dtype(0)
    Z = np.full(off[-1], np.nan, dtype)
    cblas.rows_by_columns(blas, hs, Dh + 1, cuts, Ub.T, Dh + 1, first, Dh + 1, Z, off, 0, G, one, zero)
    x = rng.standard_normal(int(w.max())).astype(dtype)
    s = np.full(cuts[-1], np.nan, dtype)
    cblas.row_sums(blas, Z, cuts, off, x, s, 0, G, one, zero)
    dh = np.full((cuts[-1], Dh), np.nan, dtype)
    cblas.rows_by_rows(blas, Z, cuts, off, U.T, Dh + 1, first, Dh, dh, 0, G, one, zero)
    for g in range(G):
        i, j, a, b = cuts[g], cuts[g + 1], first[g], first[g] + w[g]
        z = hs[i:j] @ Ub[:, a:b]
        assert np.array_equal(Z[off[g]:off[g + 1]].reshape(j - i, -1), z), (n[g], w[g])
        assert np.array_equal(s[i:j], np.matmul(z, x[:w[g]])), (n[g], w[g])
        assert np.array_equal(dh[i:j], np.matmul(z, U[:, a:b].T)), (n[g], w[g])


@needs_blas
def test_a_range_of_groups_touches_only_its_own_rows():
    rng = np.random.default_rng(4)
    U, b2, first, cuts, off, n, w = groups(rng, np.float32)
    Dh = U.shape[0]
    hs = with_ones(rng.standard_normal((cuts[-1], Dh)).astype(np.float32))
    Z = np.full(off[-1], np.nan, np.float32)
    Ub = stacked_bias(U, b2)
    cblas.rows_by_columns(cblas.functions(np.float32), hs, Dh + 1, cuts, Ub.T, Dh + 1, first, Dh + 1, Z, off, 2, 5,
                          np.float32(1), np.float32(0))
    assert np.isnan(Z[:off[2]]).all() and np.isnan(Z[off[5]:]).all() and not np.isnan(Z[off[2]:off[5]]).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grouped_layer_is_the_same_with_or_without_the_calls(dtype, monkeypatch):
    """The class softmax's word factor by the compiled calls and by NumPy's
    loops (as where no CBLAS is found): the same losses and gradients, bit for bit."""
    from elman.core.classes import word_classes
    from elman.fast.grouped import Plan, grouped_backward, grouped_losses
    from elman.model import Params

    rng = np.random.default_rng(5)
    counts = np.sort(rng.integers(1, 1000, 300))[::-1]
    p = Params.init(300, 8, 16, seed=2, dtype=dtype, classes=17, counts=counts)
    p.b2[...] = rng.standard_normal(300)            # zero at init: a bias lost would not show
    y = rng.integers(0, 300, 90)
    h = rng.random((90, 16)).astype(dtype)

    def run():
        plan = Plan(word_classes(p.class_bounds, y), p.class_bounds)
        losses, cache = grouped_losses(h, p.U, p.b2, y, plan)
        losses = losses.copy()
        dh, G, _ = grouped_backward(0.5, cache)
        return losses, dh, G.copy()

    fast = run()
    monkeypatch.setitem(cblas._FOUND, "lib", {})
    assert not cblas.available(dtype)
    slow = run()
    for a, b in zip(fast, slow):
        assert a.dtype == dtype and np.array_equal(a, b)


def test_another_layout_or_dtype_of_u_takes_numpys_loops():
    """[U; b2] stored row by row (one stretch of memory per row, not per
    word), or h in another dtype than U: the same results as NumPy's loops."""
    from elman.core.classes import class_bounds, word_classes
    from elman.fast.grouped import Plan, grouped_backward, grouped_losses
    rng = np.random.default_rng(8)
    Dh, V = 10, 60
    W = rng.standard_normal((Dh + 1, V)).astype(np.float32)         # row-major: U = W[:Dh], b2 = W[Dh]
    bounds = class_bounds(np.arange(V, 0, -1), 6)
    y = rng.integers(0, V, 40)
    plan = Plan(word_classes(bounds, y), bounds)
    for h in (rng.random((40, Dh)).astype(np.float32), rng.random((40, Dh))):
        out = []
        for found in (True, False):
            if not found:
                cblas._FOUND["lib"], saved = {}, cblas._FOUND.get("lib")
            try:
                losses, cache = grouped_losses(h, W[:Dh], W[Dh], y, plan)
                losses = losses.copy()
                out.append((losses, grouped_backward(1.0, cache)[0]))
            finally:
                if not found:
                    cblas._FOUND["lib"] = saved
        assert all(np.array_equal(a, b) for a, b in zip(*out)), h.dtype
