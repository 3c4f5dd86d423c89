"""The direct weights' gradient as a deferred scatter (fast.kernels_direct)
against fast.direct's Features.grad (the reference): the same array to the bit when built,
the same plain SGD step to rounding when scattered straight into D, through
bptt and the optimizer as the trainer runs them, for sampled and class softmax."""
import numpy as np
import pytest

from elman.core.sparse import densify
from elman.fast import kernels_direct as kd, threads
from elman.fast.colgrad import ColumnProduct
from elman.fast.kernels_direct import ScatterGrad
from elman.training.rules import make_optimizer
from elman import bptt
from test_direct import instance, sampled_args


def _window(K, dtype, seed=3, M=60):
    p, x, y, h0, hist = instance(V=12, d=3, Dh=4, B=3, T=5, N=4, M=M, K=K, seed=seed)
    if dtype != np.float64:
        p = p.astype(dtype)
        h0 = h0.astype(dtype)
    sampled = sampled_args(p, seed, S=6) if not K else None
    return p, x, y, h0, hist, sampled


@pytest.mark.parametrize("threads_n", [1, 2])
@pytest.mark.parametrize("M", [60, 4000])            # the reference's dense and sparse cases
@pytest.mark.parametrize("K", [0, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_deferred_gradient_builds_the_references_bits(K, M, dtype, threads_n, monkeypatch):
    monkeypatch.setattr(threads, "THREADS", threads_n)
    monkeypatch.setattr(kd, "CELLS", 8)                 # the table in ranges of cells the threads share
    p, x, y, h0, hist, sampled = _window(K, dtype, M=M)
    if sampled is not None:                             # unsorted, with a repeat
        sampled = (np.r_[sampled[0][::-1], sampled[0][2]], sampled[1])
    kw = dict(sampled=sampled, sparse=True, dropout=(0.3, 7), scale=1 / 15, history=hist)
    loss, ref, h = bptt(p, x, y, h0, **kw)
    loss2, got, h2 = bptt(p, x, y, h0, deferred=True, **kw)
    assert isinstance(got["D"], ScatterGrad) and loss == loss2 and np.array_equal(h, h2)
    assert [kind for kind, *_ in got["D"].parts] == (["rows", "rows"] if K else ["points", "cols"])   # classes, words
    assert isinstance(got["U"], ColumnProduct) == bool(K)
    ref, got = densify(ref), {k: g.dense() if isinstance(g, (ScatterGrad, ColumnProduct)) else g
                              for k, g in densify(got).items()}
    for k in ref:
        assert np.array_equal(ref[k], got[k]), k
    assert np.abs(ref["D"]).max() > 0
    # ``*=`` is a factor on the built array, as on the reference's
    g = bptt(p, x, y, h0, deferred=True, **kw)[1]["D"]
    g *= 320.0
    assert np.array_equal(g.dense(), ref["D"] * p.dtype.type(320.0))
    assert g.sq_sum() == pytest.approx(float(np.sum((ref["D"] * p.dtype.type(320.0)).astype(np.float64) ** 2)),
                                       rel=1e-5)


@pytest.mark.parametrize("K", [0, 3])
def test_deferred_is_off_without_sparse(K):
    p, x, y, h0, hist, sampled = _window(K, np.float64)
    got = bptt(p, x, y, h0, sampled=sampled, history=hist, deferred=True)[1]
    assert isinstance(got["D"], np.ndarray)


@pytest.mark.parametrize("K", [0, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_plain_step_scatters_into_D_as_the_reference_updates(K, dtype):
    """Trainer steps (Adagrad, clipping, D's plain rate, the per-token
    factor), after one step and three: after one, every tensor and the state
    to the bit but D (its cells take the window's values one at a time, the
    reference sums them first) and, under a class softmax, U and b2 (Adagrad
    forms U's column gradient from its factors, b2's is summed column by
    column: other orders than BLAS's), which agree to rounding; after three,
    everything they feed to rounding."""
    for steps in (1, 3):
        _steps_agree(K, dtype, steps, steps == 1, {"D", *({"U", "b2", "G.U", "G.b2"} if K else ())})


def _steps_agree(K, dtype, steps, exact, rounded=frozenset()):
    runs = []
    for deferred in (False, True):
        p, x, y, h0, hist, sampled = _window(K, dtype)
        params = p.as_dict()
        opt = make_optimizer("adagrad", params, lr=0.1, clip=5.0, plain={"D": 0.05})
        for t in range(steps):
            _, grads, h0 = bptt(p, x, y, h0, sampled=sampled, sparse=True, dropout=(0.25, t), scale=1 / 15,
                                history=hist, deferred=deferred)
            grads["D"] *= p.dtype.type(15)
            opt.lr = 0.1 / (t + 1)
            opt.step(params, grads)
        runs.append((p.as_dict(), opt.state_arrays()))
    (ref, ref_state), (got, got_state) = runs
    moved = _window(K, dtype)[0].D
    assert not np.allclose(ref["D"], moved)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    close = lambda a, b: np.allclose(a, b, rtol=tol, atol=tol * np.abs(a).max())    # noqa: E731
    for k in [*ref, *ref_state]:
        a, b = (ref[k], got[k]) if k in ref else (ref_state[k], got_state[k])
        if a.dtype.kind == "f":
            assert (np.array_equal if exact and k not in rounded else close)(a, b), k


def test_a_non_finite_scatter_stops_the_step_with_nothing_changed():
    p, x, y, h0, hist, sampled = _window(0, np.float32)
    params = p.as_dict()
    before = {k: v.copy() for k, v in params.items()}
    grads = bptt(p, x, y, h0, sampled=sampled, sparse=True, history=hist, deferred=True)[1]
    grads["D"].parts[1][3][0, 0] = np.nan
    assert not grads["D"].finite()
    with pytest.raises(FloatingPointError):
        make_optimizer("adagrad", params, lr=0.1, clip=5.0, plain={"D": 0.05}).step(params, grads)
    for k, v in params.items():
        assert np.array_equal(v, before[k]), k


def test_an_optimizer_without_a_plain_rate_takes_the_built_array():
    p, x, y, h0, hist, sampled = _window(0, np.float64)
    runs = []
    for deferred in (False, True):
        q = p.astype("float64")
        params = q.as_dict()
        grads = bptt(q, x, y, h0, sampled=sampled, sparse=True, history=hist, deferred=deferred)[1]
        make_optimizer("sgd", params, lr=0.5).step(params, grads)
        runs.append(params["D"].copy())
    assert np.array_equal(*runs)
