"""Optimizers: each update rule against its textbook formula, clipping, state round trip."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from elman.errors import ElmanError
from elman.training.optim import clip_by_global_norm, global_norm
from elman.training.rules import OPTIMIZERS, make_optimizer


def _arrays(seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {"W": rng.normal(size=(4, 3)).astype(dtype), "b": rng.normal(size=(3,)).astype(dtype)}


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), max_norm=st.floats(0.01, 100.0))
def test_clipping_bounds_the_norm_and_keeps_the_direction(seed, max_norm):
    grads = _arrays(seed)
    before = {k: g.copy() for k, g in grads.items()}
    norm = clip_by_global_norm(grads, max_norm)
    assert norm == pytest.approx(np.sqrt(sum((g ** 2).sum() for g in before.values())))
    after = global_norm(grads)
    assert after <= max_norm * (1 + 1e-9)
    if norm <= max_norm:
        assert all(np.array_equal(grads[k], before[k]) for k in grads)
    else:
        assert after == pytest.approx(max_norm, rel=1e-5)
        ratios = np.concatenate([(grads[k] / before[k]).ravel() for k in grads])
        assert np.allclose(ratios, ratios[0])


def test_clip_zero_disables_clipping():
    grads = {k: 1e6 * g for k, g in _arrays(1).items()}
    before = {k: g.copy() for k, g in grads.items()}
    clip_by_global_norm(grads, 0.0)
    assert all(np.array_equal(grads[k], before[k]) for k in grads)


def _reference(name, lr, steps):
    """The update rules as the papers write them, on the same gradient sequence
    (Adagrad's sum from G0, as TensorFlow's initial_accumulator_value)."""
    from elman.training.rules import ADAGRAD_INITIAL
    params, grads_seq = _arrays(0), [_arrays(10 + i) for i in range(steps)]
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.full_like(x, ADAGRAD_INITIAL if name == "adagrad" else 0.0) for k, x in params.items()}
    for t, grads in enumerate(grads_seq, start=1):
        for k, g in grads.items():
            if name == "sgd":
                params[k] = params[k] - lr * g
            elif name == "adagrad":
                v[k] = v[k] + g ** 2
                params[k] = params[k] - lr * g / (np.sqrt(v[k]) + 1e-8)
            else:
                m[k] = 0.9 * m[k] + 0.1 * g
                v[k] = 0.999 * v[k] + 0.001 * g ** 2
                m_hat, v_hat = m[k] / (1 - 0.9 ** t), v[k] / (1 - 0.999 ** t)
                params[k] = params[k] - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
    return params, grads_seq


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_update_matches_the_textbook_rule(name):
    want, grads_seq = _reference(name, 0.05, steps=5)
    params = _arrays(0)
    opt = make_optimizer(name, params, lr=0.05, clip=0.0)
    for grads in grads_seq:
        opt.step(params, {k: g.copy() for k, g in grads.items()})
    for k in want:
        np.testing.assert_allclose(params[k], want[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_minimises_a_quadratic(name):
    target = _arrays(3)
    params = {k: np.zeros_like(v) for k, v in target.items()}
    opt = make_optimizer(name, params, lr={"sgd": 0.1, "adagrad": 0.5, "adam": 0.05, "lazyadam": 0.05}[name], clip=5.0)
    start = sum(((params[k] - target[k]) ** 2).sum() for k in target)
    for _ in range(300):
        opt.step(params, {k: 2 * (params[k] - target[k]) for k in target})
    end = sum(((params[k] - target[k]) ** 2).sum() for k in target)
    assert end < 1e-2 * start


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_round_trip_continues_bit_for_bit(name):
    grads_seq = [_arrays(20 + i, np.float32) for i in range(6)]
    a = _arrays(0, np.float32)
    opt_a = make_optimizer(name, a, lr=0.01, clip=1.0)
    for grads in grads_seq[:3]:
        opt_a.step(a, {k: g.copy() for k, g in grads.items()})
    # What a checkpoint would hold: copies of the arrays, JSON-able scalars.
    saved_params = {k: v.copy() for k, v in a.items()}
    saved_arrays = {k: v.copy() for k, v in opt_a.state_arrays().items()}
    saved_scalars = dict(opt_a.state_scalars())
    for grads in grads_seq[3:]:
        opt_a.step(a, {k: g.copy() for k, g in grads.items()})

    b = saved_params
    opt_b = make_optimizer(name, b, lr=123.0, clip=0.0)
    opt_b.load_state(saved_arrays, saved_scalars)
    for grads in grads_seq[3:]:
        opt_b.step(b, {k: g.copy() for k, g in grads.items()})
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_state_of_another_optimizer_is_refused():
    params = _arrays(0)
    adam = make_optimizer("adam", params)
    sgd = make_optimizer("sgd", params)
    with pytest.raises(ElmanError, match="adam"):
        sgd.load_state(adam.state_arrays(), adam.state_scalars())


def test_unknown_optimizer_is_refused():
    with pytest.raises(ElmanError, match="rmsprop"):
        make_optimizer("rmsprop", _arrays(0))


def test_updates_stay_in_float32():
    params = _arrays(0, np.float32)
    for name in OPTIMIZERS:
        make_optimizer(name, params, lr=0.1).step(params, _arrays(1, np.float32))
    assert all(v.dtype == np.float32 for v in params.values())


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_non_finite_gradient_changes_nothing(name):
    params = _arrays(0)
    before = {k: v.copy() for k, v in params.items()}
    opt = make_optimizer(name, params, clip=5.0)
    grads = _arrays(1)
    grads["b"][1] = np.nan
    with pytest.raises(FloatingPointError):
        opt.step(params, grads)
    assert all(np.array_equal(params[k], before[k]) for k in params)
    assert opt.t == 0


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_big_arrays_updated_in_row_blocks_on_the_cores_equal_one_piece(name, monkeypatch):
    """A parameter of 2^18 entries or more is cut into row blocks that the
    threads update side by side; an element-wise rule gives the same bits."""
    from elman.fast import threads as parallel
    rng = np.random.default_rng(0)
    params = {"U": rng.normal(size=(300, 1000)).astype(np.float32)}
    grads = [{"U": rng.normal(size=(300, 1000)).astype(np.float32)} for _ in range(3)]
    results = []
    for threads in (parallel.THREADS, 1):
        monkeypatch.setattr(parallel, "THREADS", threads)
        p = {k: v.copy() for k, v in params.items()}
        opt = make_optimizer(name, p, clip=0.0)
        for g in grads:
            opt.step(p, {k: v.copy() for k, v in g.items()})
        results.append(p["U"])
    assert not np.array_equal(results[0], params["U"])
    assert np.array_equal(results[0], results[1])


@pytest.mark.parametrize("name", ["sgd", "adagrad", "adam"])
def test_plain_parameters_take_unclipped_sgd_steps_at_a_rate_that_follows_the_schedule(name):
    from elman.core.sparse import SparseGrad
    rng = np.random.default_rng(0)
    params = {"W": rng.normal(size=(3, 4)), "D": rng.normal(size=50)}
    opt = make_optimizer(name, params, lr=0.2, clip=1e-3, plain={"D": 0.5})
    assert "D" not in opt.state_arrays() and not any(k.endswith(".D") for k in opt.state_arrays())
    D0, gD = params["D"].copy(), rng.normal(size=50) * 10
    opt.step(params, {"W": rng.normal(size=(3, 4)), "D": gD.copy()})
    assert np.allclose(params["D"], D0 - 0.5 * gD, rtol=1e-15)            # not clipped by the tiny clip
    opt.lr /= 2                                                            # a halving of the schedule
    D1, idx = params["D"].copy(), np.array([3, 7])
    opt.step(params, {"W": rng.normal(size=(3, 4)), "D": SparseGrad(idx, np.array([1.0, -2.0]), (50,), 0)})
    want = D1.copy()
    want[idx] -= 0.25 * np.array([1.0, -2.0])
    assert np.array_equal(params["D"], want)
    restored = make_optimizer(name, params, lr=0.2, clip=1e-3, plain={"D": 0.5})
    restored.load_state(opt.state_arrays(), opt.state_scalars())
    assert (restored.lr, restored.lr0) == (0.1, 0.2)


@pytest.mark.parametrize("name", ["sgd", "adagrad", "adam"])
def test_tensors_updated_side_by_side_equal_one_thread(name, monkeypatch):
    """The cores share the tensors' updates (dense, sparse rows, a plain
    parameter): the same bits as one thread doing them in turn."""
    from elman.core.sparse import SparseGrad
    from elman.fast import threads as parallel
    rng = np.random.default_rng(3)
    params = {"U": rng.normal(size=(300, 1000)).astype(np.float32), "L": rng.normal(size=(50, 8)).astype(np.float32),
              "b": rng.normal(size=8).astype(np.float32), "D": rng.normal(size=70_000).astype(np.float32)}

    def grads():
        g = np.random.default_rng(4)
        return [{"U": g.normal(size=(300, 1000)).astype(np.float32),
                 "L": SparseGrad(np.array([2, 9, 40]), g.normal(size=(3, 8)).astype(np.float32), (50, 8), 0),
                 "b": g.normal(size=8).astype(np.float32), "D": g.normal(size=70_000).astype(np.float32)}
                for _ in range(3)]
    results = []
    for threads in (2, 1):
        monkeypatch.setattr(parallel, "THREADS", threads)
        p = {k: v.copy() for k, v in params.items()}
        opt = make_optimizer(name, p, clip=1.0, plain={"D": 0.01})
        for g in grads():
            opt.step(p, g)
        results.append(p)
    for k in params:
        assert not np.array_equal(results[0][k], params[k]) and np.array_equal(results[0][k], results[1][k]), k


def test_adagrads_initial_value_bounds_the_step_of_a_tiny_gradient_and_is_kept_with_its_state():
    """G0 = 0 makes the first step lr·sign(g) whatever |g|: a gradient that is
    zero but for rounding moves a full step. With G0 it moves lr·|g|/sqrt(G0)
    at most, and a gradient well above sqrt(G0) still takes about lr."""
    from elman.training.rules import ADAGRAD_INITIAL, Adagrad
    assert ADAGRAD_INITIAL > 0
    tiny, big = 0.1 * ADAGRAD_INITIAL ** 0.5, 1e3 * ADAGRAD_INITIAL ** 0.5
    steps = {}
    for G0 in (0.0, ADAGRAD_INITIAL):
        p = {"W": np.zeros(2, np.float32)}
        opt = make_optimizer("adagrad", p, lr=0.1, initial=G0)
        opt.step(p, {"W": np.array([tiny, big], np.float32)})
        assert abs(p["W"][1]) == pytest.approx(0.1, rel=1e-3)
        steps[G0] = abs(p["W"][0])
    assert steps[0.0] > 0.09 and steps[ADAGRAD_INITIAL] < 0.1 * tiny / ADAGRAD_INITIAL ** 0.5 == pytest.approx(0.01)
    assert opt.state_scalars()["initial"] == ADAGRAD_INITIAL
    assert np.all(Adagrad({"W": np.zeros(3)}, 0.1).state["G"]["W"] == ADAGRAD_INITIAL)


def test_a_checkpoint_without_adagrads_initial_value_resumes_as_it_was():
    """State saved before G0 existed started at 0: its arrays carry that,
    and the run continues with exactly the steps it would have taken."""
    grads_seq = [_arrays(20 + i, np.float32) for i in range(4)]
    a = _arrays(0, np.float32)
    old = make_optimizer("adagrad", a, lr=0.05, initial=0.0)
    old.step(a, {k: g.copy() for k, g in grads_seq[0].items()})
    arrays = {k: v.copy() for k, v in old.state_arrays().items()}
    scalars = {k: v for k, v in old.state_scalars().items() if k != "initial"}     # an older file
    b = {k: v.copy() for k, v in a.items()}
    for grads in grads_seq[1:]:
        old.step(a, {k: g.copy() for k, g in grads.items()})
    resumed = make_optimizer("adagrad", b)                 # today's default G0
    resumed.load_state(arrays, scalars)
    assert resumed.initial == 0.0
    for grads in grads_seq[1:]:
        resumed.step(b, {k: g.copy() for k, g in grads.items()})
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["sgd", "adagrad"])
def test_the_processes_parts_of_a_gradient_step_as_their_sum(name):
    """A gradient left as the processes' parts (training.nodesync): a rule
    takes their sum, bit for bit; a plain parameter applies them in turn,
    the same up to rounding."""
    from elman.core.sparse import SparseGrad
    from elman.training.nodesync import SparseParts, sum_parts
    rng = np.random.default_rng(5)
    params = {"L": rng.normal(size=(40, 6)).astype(np.float32), "D": rng.normal(size=500).astype(np.float32)}
    L_parts = [(np.array([1, 5, 9]), rng.normal(size=(3, 6)).astype(np.float32)),
               (np.array([0, 5, 39]), rng.normal(size=(3, 6)).astype(np.float32))]
    D_parts = [(np.sort(rng.choice(500, 80, replace=False)), rng.normal(size=80).astype(np.float32))
               for _ in range(2)]
    like_L, like_D = SparseGrad(*L_parts[0], (40, 6), 0), SparseGrad(*D_parts[0], (500,), 0)
    results = []
    for parts in (True, False):
        p = {k: v.copy() for k, v in params.items()}
        opt = make_optimizer(name, p, lr=0.1, clip=5.0, plain={"D": 0.5})
        if parts:
            g = {"L": SparseParts(L_parts, like_L), "D": SparseParts(D_parts, like_D)}
        else:
            g = {"L": sum_parts(L_parts, like_L), "D": sum_parts(D_parts, like_D)}
        opt.step(p, g)
        results.append(p)
    assert np.array_equal(results[0]["L"], results[1]["L"]) and not np.array_equal(results[0]["L"], params["L"])
    assert np.allclose(results[0]["D"], results[1]["D"], rtol=0, atol=1e-6)
    assert not np.array_equal(results[0]["D"], params["D"])
