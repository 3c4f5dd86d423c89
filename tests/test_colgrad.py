"""A class softmax's dJ/dU as its factors (fast.colgrad.ColumnProduct)
against the array fast.grouped builds and core's class layer: the array,
its norm, and Adagrad's and SGD's steps taken from the factors against the
compiled rules on the array, clipped or not, on one thread and two."""
import numpy as np
import pytest

from elman.core.classes import ClassSoftmax
from elman.core.params import Params
from elman.core.sparse import SparseGrad
from elman.fast import threads
from elman.fast.classes import class_output_backward, class_output_losses
from elman.fast import kernels_optim as ko
from elman.fast.colgrad import ColumnProduct, Factors, column_cuts, summed_groups
from elman.training.rules import make_optimizer


def _window(dtype, V=60, K=15, Dh=6, N=14, seed=2):
    rng = np.random.default_rng(seed)
    counts = np.round(1000 / np.arange(1, V + 1)).astype(np.int64) + 1      # Zipf: word 0 a class alone
    p = Params.init(V, 4, Dh, seed=seed, dtype=dtype, classes=K, counts=counts)
    p.U[...] = rng.normal(0, 0.5, p.U.shape)
    p.b2[...] = rng.normal(0, 0.5, V)
    h = rng.uniform(0, 1, (N, Dh)).astype(dtype)
    y = rng.choice(V, N, p=counts / counts.sum())
    y[:6] = 0                                           # word 0's class: more rows than twice its columns
    return p, h, y


def _grads(p, h, y, dloss, product):
    _, cache = class_output_losses(h, p.U, p.b2, p.Uc, p.bc, p.class_bounds, y)
    return class_output_backward(dloss, cache, product=product)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_factors_make_the_arrays_of_the_layer(dtype):
    p, h, y = _window(dtype)
    dh, cols, dU, db2, dUc, dbc, _ = _grads(p, h, y, 0.25, False)
    dh2, cols2, prod, db2s, dUc2, dbc2, _ = _grads(p, h, y, 0.25, True)
    assert isinstance(prod, ColumnProduct) and isinstance(db2s, SparseGrad)
    assert np.array_equal(dh, dh2) and np.array_equal(cols, cols2) and np.array_equal(dUc, dUc2)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    built = prod.sparse()
    assert np.array_equal(built.index, cols) and len(cols) < p.V        # some classes have no target
    np.testing.assert_allclose(built.values, dU, rtol=tol, atol=tol * np.abs(dU).max())
    np.testing.assert_allclose(db2s.values, db2, rtol=tol, atol=tol * np.abs(db2).max())
    n, w = np.diff(prod.plan.cuts), prod.plan.b - prod.plan.a
    assert (n >= 2 * w).any() and (n < 2 * w).any()    # the norm's two ways, column by column and by Gram matrices
    assert prod.sq_sum() == pytest.approx(float(np.sum(dU.astype(np.float64) ** 2)), rel=tol)
    # and the reference: core's class layer, dense
    ref = ClassSoftmax()
    fwd = ref.losses(p, h.astype(np.float64) if dtype == np.float64 else h, y)
    want = ref.backward(0.25, fwd.cache).grads
    np.testing.assert_allclose(prod.dense(), want["U"], rtol=tol * 10, atol=tol * np.abs(want["U"]).max())
    np.testing.assert_allclose(db2s.dense(), want["b2"], rtol=tol * 10, atol=tol * np.abs(want["b2"]).max())
    prod *= 0.5
    assert prod.sq_sum() == pytest.approx(0.25 * float(np.sum(dU.astype(np.float64) ** 2)), rel=tol)
    np.testing.assert_allclose(prod.dense()[:, cols], dU * dtype(0.5), rtol=tol, atol=tol * np.abs(dU).max())
    assert prod.finite()


@pytest.mark.parametrize("threads_n", [1, 2])
@pytest.mark.parametrize("opt", ["adagrad", "sgd"])
@pytest.mark.parametrize("clip", [0.0, 1e-3])          # 1e-3: every step clipped
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_steps_from_the_factors_agree_with_the_steps_on_the_array(dtype, clip, opt, threads_n, monkeypatch):
    monkeypatch.setattr(threads, "THREADS", threads_n)
    runs = []
    for product in (False, True):
        p, h, y = _window(dtype)
        params = p.as_dict()
        o = make_optimizer(opt, params, lr=0.3, clip=clip)
        for t in range(3):
            _, cols, dU, db2, dUc, dbc, _ = _grads(p, h, y, 1.0 / (t + 2), product)
            if not product:
                dU, db2 = SparseGrad(cols, dU, p.U.shape, -1), SparseGrad(cols, db2, p.b2.shape, -1)
            o.step(params, {"U": dU, "b2": db2, "Uc": dUc, "bc": dbc})
        runs.append(({k: v.copy() for k, v in params.items()}, o.state_arrays()))
    (ref, ref_state), (got, got_state) = runs
    tol = 1e-12 if dtype == np.float64 else 1e-5
    moved = _window(dtype)[0].U
    assert not np.allclose(ref["U"], moved)
    for a, b in [(ref[k], got[k]) for k in ref if ref[k].dtype.kind == "f"] + \
                [(ref_state[k], got_state[k]) for k in ref_state]:
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol * np.abs(a).max())


def test_one_thread_two_and_sixteen_take_the_same_step(monkeypatch):
    out = []
    for n in (1, 2, 16):
        monkeypatch.setattr(threads, "THREADS", n)
        p, h, y = _window(np.float32, V=300, K=12, N=200)
        params = p.as_dict()
        prod = _grads(p, h, y, 0.1, True)[2]
        G = np.full_like(p.U, 1e-7)
        assert prod.step(p.U, G, 0.1, 1e-8)
        out.append((params["U"].copy(), G))
    for U, G in out[1:]:
        assert np.array_equal(out[0][0], U) and np.array_equal(out[0][1], G)


def test_a_layout_the_kernel_does_not_take_falls_back_to_the_array():
    p, h, y = _window(np.float32)
    prod = _grads(p, h, y, 0.1, True)[2]
    U = np.ascontiguousarray(p.U)                       # row-major: columns are not stretches of memory
    assert not prod.step(U, np.zeros_like(U), 0.1, 1e-8)
    params = {"U": U}
    o = make_optimizer("adagrad", params, lr=0.1)
    before = U.copy()
    o.step(params, {"U": prod})
    want = before.copy()
    g = prod.dense()
    G = o.initial + g * g
    want -= (g * np.float32(0.1)) / (np.sqrt(G) + np.float32(o.eps))
    np.testing.assert_allclose(U, want, rtol=1e-5, atol=1e-7)


def test_the_product_outlives_the_next_forward_pass():
    """The layer's buffers are reused window after window; the product keeps its own."""
    p, h, y = _window(np.float32)
    prod = _grads(p, h, y, 0.1, True)[2]
    want = prod.dense()
    class_output_losses(h[::-1].copy(), p.U, p.b2, p.Uc, p.bc, p.class_bounds, y)    # the same buffer's size
    assert np.array_equal(prod.dense(), want)


def _side_by_side(prods):
    """Several processes' products' factors laid side by side, as ``training.nodeproduct`` lays them."""
    hw = np.concatenate([g.hw for g in prods])
    flat = np.concatenate([g.flat[:g.plan.off[-1]] for g in prods])
    rows, ents = np.r_[0, np.cumsum([len(g.hw) for g in prods])], np.r_[0, np.cumsum([g.plan.off[-1] for g in prods])]
    parts = [Factors(int(rows[r]), int(ents[r]), g.plan.a, g.plan.b, g.plan.cuts, g.plan.off)
             for r, g in enumerate(prods)]
    return hw, flat, parts


def _processes(dtype, n, seed=3, **window):
    """n processes' products of one model (each its own rows), and their arrays' sum (Dh,V)."""
    p, _, _ = _window(dtype, **window)
    prods = []
    for r in range(n):
        _, h, y = _window(dtype, seed=seed + r, **window)
        prods.append(_grads(p, h, y, 0.3, True)[2])
    return p, prods, sum(g.dense() for g in prods)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_processes_factors_side_by_side_make_the_sum_of_their_arrays(dtype, n):
    """On any span of columns, a class cut by it or not: the array, its norm, and Adagrad's step."""
    p, prods, want = _processes(dtype, n)
    hw, flat, parts = _side_by_side(prods)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    cuts = column_cuts(parts, p.V, n)
    assert cuts[0] == 0 and cuts[-1] == p.V and all(a < b for a, b in zip(cuts, cuts[1:]))
    bounds = set(p.class_bounds.tolist())
    spans = list(zip(cuts, cuts[1:])) + [(0, p.V), (7, 41)]
    assert any(lo not in bounds for lo, _ in spans)                       # a class cut by the span
    U0, G0 = p.U.copy(order="K"), np.full_like(p.U, 1e-7)
    Ub, Gb = U0.copy(order="K"), G0.copy(order="K")
    for lo, hi in spans:
        sub = np.zeros_like(want)
        sub[:, lo:hi] = want[:, lo:hi]
        got = ColumnProduct(p.U.shape, hw, flat, groups=summed_groups(parts, lo, hi))
        assert got.index.min() >= lo and got.index.max() < hi
        np.testing.assert_allclose(got.dense(), sub, rtol=tol, atol=tol * np.abs(want).max())
        assert got.sq_sum() == pytest.approx(float(np.sum(sub.astype(np.float64) ** 2)), rel=tol)
        # the step from the factors against the compiled rule on the summed array
        U, G = U0.copy(order="K"), G0.copy(order="K")
        assert got.step(U, G, 0.3, 1e-8)
        ref = SparseGrad(got.index, sub[:, got.index], p.U.shape, -1)
        Ur, Gr = U0.copy(order="K"), G0.copy(order="K")
        assert ko.adagrad(ko.rows_of(Ur, -1), ko.rows_of(Gr, -1), ko.rows_of(ref.values, -1), ref.index, 0.3, 1e-8)
        np.testing.assert_allclose(U, Ur, rtol=tol, atol=tol)
        np.testing.assert_allclose(G, Gr, rtol=tol, atol=tol * np.abs(Gr).max())
        if (lo, hi) in zip(cuts, cuts[1:]):                     # the spans together: the whole step
            got.step(Ub, Gb, 0.3, 1e-8)
    whole = ColumnProduct(p.U.shape, hw, flat, groups=summed_groups(parts, 0, p.V))
    Uw, Gw = U0.copy(order="K"), G0.copy(order="K")
    whole.step(Uw, Gw, 0.3, 1e-8)
    assert np.array_equal(Ub, Uw) and np.array_equal(Gb, Gw) and not np.array_equal(Ub, U0)


def test_one_process_side_by_side_is_its_own_product():
    p, prods, want = _processes(np.float32, 1)
    hw, flat, parts = _side_by_side(prods)
    got = ColumnProduct(p.U.shape, hw, flat, groups=summed_groups(parts, 0, p.V))
    assert np.array_equal(got.index, prods[0].index) and got.sq_sum() == prods[0].sq_sum()
    for g in (got, prods[0]):
        U, G = p.U.copy(order="K"), np.full_like(p.U, 1e-7)
        g.step(U, G, 0.1, 1e-8)
        if g is got:
            first = U, G
    assert np.array_equal(first[0], U) and np.array_equal(first[1], G)


def test_the_spans_cut_the_work_evenly():
    """A class of many rows weighs its columns by its rows: the spans hold about equal work, not equal columns."""
    p, prods, _ = _processes(np.float32, 2, V=300, K=12, N=200)
    _, _, parts = _side_by_side(prods)
    cuts = column_cuts(parts, p.V, 2)
    work = [sum((np.diff(g.rcuts) + 2) @ g.wid for g in [summed_groups(parts, lo, hi)]) for lo, hi in zip(cuts, cuts[1:])]
    assert abs(work[0] - work[1]) <= 2 * max(work) / 100 + 400     # one column of the biggest class at most
    assert cuts[1] < p.V // 2                                       # the frequent words' classes come first
