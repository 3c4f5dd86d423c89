"""The compiled update rules (fast.kernels_optim) against NumPy's (training.optim's
``rule``, the reference), to the bit: dense and sparse gradients, every layout a
parameter has (U's columns are rows of [U; b2]ᵀ's memory, b2 a strided row), the
direct weights' plain steps, float32 and float64, one thread and several."""
import numpy as np
import pytest

from elman.core.params import word_major
from elman.core.sparse import SparseGrad
from elman.fast import kernels_optim as ko, threads
from elman.training.rules import make_optimizer


def _params(dtype, V=300, Dh=7, d=5, M=2000):
    rng = np.random.default_rng(0)
    U, b2 = word_major(Dh, V, dtype)
    U[...], b2[...] = rng.normal(size=(Dh, V)), rng.normal(size=V)
    return {"L": rng.normal(size=(V, d)).astype(dtype), "H": rng.normal(size=(Dh, Dh)).astype(dtype),
            "U": U, "b1": rng.normal(size=Dh).astype(dtype), "b2": b2, "D": rng.normal(size=M).astype(dtype)}


def _grads(params, seed, sparse):
    rng = np.random.default_rng(seed)
    dt = params["L"].dtype
    V = params["b2"].size
    out = {"H": rng.normal(size=params["H"].shape).astype(dt), "b1": rng.normal(size=params["b1"].shape).astype(dt)}
    if not sparse:
        out.update({k: rng.normal(size=params[k].shape).astype(dt) for k in ("L", "U", "b2", "D")})
        return out
    rows = np.sort(rng.choice(V, 40, replace=False))
    cols = np.sort(rng.choice(V, 60, replace=False))
    cells = np.sort(rng.choice(params["D"].size, 500, replace=False))
    # U's columns as sampled softmax hands them back: a strided view of (C, Dh+1) sums.
    sums = rng.normal(size=(60, params["U"].shape[0] + 1)).astype(dt)
    out.update(L=SparseGrad(rows, rng.normal(size=(40, params["L"].shape[1])).astype(dt), params["L"].shape, 0),
               U=SparseGrad(cols, sums[:, :-1].T, params["U"].shape, -1),
               b2=SparseGrad(cols, sums[:, -1], params["b2"].shape, -1),
               D=SparseGrad(cells, rng.normal(size=500).astype(dt), params["D"].shape, 0))
    return out


def _copy(g):
    if isinstance(g, SparseGrad):
        return SparseGrad(g.index.copy(), g.values.copy(), g.shape, g.axis)
    return g.copy()


def _run(name, compiled, dtype, sparse, steps=3):
    params = _params(dtype)
    opt = make_optimizer(name, params, lr=0.3, clip=2.0, plain={"D": 0.05})
    opt.compiled = compiled
    for t in range(steps):
        opt.lr = 0.3 / (t + 1)                          # the plain rate follows the schedule too
        opt.step(params, {k: _copy(g) for k, g in _grads(params, t, sparse).items()})
    return params, opt.state_arrays()


@pytest.mark.parametrize("threads_n", [1, 2])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["sgd", "adagrad"])
def test_compiled_rules_give_numpys_bits(name, dtype, sparse, threads_n, monkeypatch):
    monkeypatch.setattr(threads, "THREADS", threads_n)
    monkeypatch.setattr(ko, "BLOCK", 64)                # several blocks a tensor: the cores share them
    calls = []
    for loop in ("adagrad_rows", "sgd_rows"):
        compiled_loop = getattr(ko, loop)
        monkeypatch.setattr(ko, loop, lambda *a, f=compiled_loop, n=loop: calls.append(n) or f(*a))
    ref, ref_state = _run(name, False, dtype, sparse)
    assert not calls
    got, got_state = _run(name, True, dtype, sparse)
    # Every tensor through a compiled loop, but b2's dense row (its entries are Dh+1 apart).
    assert calls.count(f"{name}_rows") >= 3 * (4 if name == "sgd" or not sparse else 5)
    for k in ref:
        assert np.array_equal(ref[k], got[k]), k
    for k in ref_state:
        assert np.array_equal(ref_state[k], got_state[k]), k
    assert not np.array_equal(ref["U"], _params(dtype)["U"])      # the updates did move U


def test_flat_spans_and_the_layouts_it_refuses():
    W = np.arange(30, dtype=np.float32).reshape(6, 5)
    span, rs = ko.flat(W[:, :4])                    # rows of 4 entries, 5 apart (U's columns in [U; b2]ᵀ)
    assert rs == 5 and span[rs * 2 + 3] == W[2, 3] and span.size == 5 * 5 + 4
    assert ko.flat(W[:, ::2]) is None               # entries along a row not adjacent
    assert ko.flat(W.T) is None
    from numpy.lib.stride_tricks import as_strided
    overlapping = as_strided(W.reshape(-1), shape=(4, 5), strides=(8, 4))
    assert ko.flat(overlapping) is None             # rows that share memory would update twice


def test_a_layout_the_loops_refuse_takes_numpys_rule():
    """A parameter whose rows are not runs of memory (a column-strided view): the
    NumPy rule runs instead, with the same result as for a contiguous copy."""
    rng = np.random.default_rng(1)
    base = rng.normal(size=(8, 12)).astype(np.float32)
    p = base[:, ::2]                                # (8, 6), entries 2 apart
    before, q = p.copy(), p.copy()
    g = rng.normal(size=p.shape).astype(np.float32)
    for arr in (p, q):
        make_optimizer("adagrad", {"W": arr}, lr=0.1).step({"W": arr}, {"W": g.copy()})
    assert np.array_equal(p, q) and not np.array_equal(p, before)
