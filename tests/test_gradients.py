"""The core's gradients, verified three ways: the formulas (layers.py) against
central finite differences in float64, and against HIPS autograd applied to
an independent forward pass written here."""
import warnings

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from elman import Params, bptt, step_gradients
from elman.model.gradcheck import EPS, central_difference, check_bptt, check_step, max_rel_error, random_instance
from elman.model import PARAM_NAMES, forward_losses, output_probs, rnn_step
from helpers import ag_loss, logsumexp, sigmoid_ref

sizes = st.fixed_dictionaries(dict(
    V=st.integers(2, 9), d=st.integers(1, 5), Dh=st.integers(1, 5),
    B=st.integers(1, 3), T=st.integers(1, 4), seed=st.integers(0, 2**16)))
EDGE = [dict(V=2, d=1, Dh=1, B=1, T=1, seed=0), dict(V=2, d=1, Dh=1, B=1, T=3, seed=1),
        dict(V=3, d=1, Dh=4, B=2, T=1, seed=2)]


# ------------------------------------------------------------ finite differences

def rounding_of_differences(J: float) -> float:
    """What rounding alone puts into a central difference of J: each J
    carries about ε|J|, and the difference divides by 2·EPS (a window's J
    is a sum of up to 12 losses here, so this can pass 1e-7 of a small
    gradient on its own)."""
    return 4 * np.finfo(np.float64).eps * abs(J) / EPS


@settings(max_examples=60, deadline=None)
@given(sizes)
def test_bptt_equals_finite_differences(s):
    instance = random_instance(**s)
    rows = check_bptt(*instance)
    assert [r.name for r in rows] == list(PARAM_NAMES)
    noise = rounding_of_differences(bptt(*instance)[0])
    for r in rows:
        assert r.max_rel_error < 1e-7 or r.max_abs_error < noise, r


@settings(max_examples=60, deadline=None)
@given(sizes)
def test_step_gradients_equal_finite_differences(s):
    p, inputs, targets, h0 = random_instance(**s)
    rows = check_step(p, int(inputs[0, 0]), int(targets[0, 0]), h0[0].copy())
    assert [r.name for r in rows] == ["U", "h", "b2", "b1", "L_x", "I", "H", "h_prev"]
    for r in rows:
        assert r.max_rel_error < 1e-7, r


@pytest.mark.parametrize("s", EDGE)
def test_edge_sizes(s):
    for r in check_bptt(*random_instance(**s)):
        assert r.max_rel_error < 1e-7, r


def test_gradcheck_detects_a_wrong_gradient():
    p, inputs, targets, h0 = random_instance()
    _, grads, _ = bptt(p, inputs, targets, h0)
    J = lambda: bptt(p, inputs, targets, h0)[0]  # noqa: E731
    assert max_rel_error(-grads["H"], central_difference(J, p.H)) > 1.0
    assert max_rel_error(grads["U"] * 1.001, central_difference(J, p.U)) > 1e-4


# ---------------------------------------------------------------- autograd

@settings(max_examples=40, deadline=None)
@given(sizes)
def test_bptt_equals_autograd(s):
    p, inputs, targets, h0 = random_instance(**s)
    loss, grads, _ = bptt(p, inputs, targets, h0)
    arrays = {k: v.copy() for k, v in p.as_dict().items()}
    assert loss == pytest.approx(ag_loss(arrays, inputs, targets, h0), rel=1e-12)
    auto = autograd.grad(ag_loss)(arrays, inputs, targets, h0)
    for name in PARAM_NAMES:
        assert grads[name].shape == arrays[name].shape
        assert max_rel_error(grads[name], auto[name]) < 1e-10, name


@settings(max_examples=40, deadline=None)
@given(sizes)
def test_step_gradients_equal_autograd(s):
    p, inputs, targets, h0 = random_instance(**s)
    x, y, h_prev = int(inputs[0, 0]), int(targets[0, 0]), h0[0]
    g = step_gradients(p, x, y, h_prev)
    arrays = p.as_dict()

    def J(a, h_prev):
        return ag_loss(a, np.array([[x]]), np.array([[y]]), h_prev[None, :])

    auto = autograd.grad(J)(arrays, h_prev)
    auto_h_prev = autograd.grad(J, 1)(arrays, h_prev)
    for name in ["U", "b2", "b1", "I", "H"]:
        assert max_rel_error(g[name], auto[name]) < 1e-10, name
    assert max_rel_error(g["L_x"], auto["L"][x]) < 1e-10
    assert max_rel_error(g["h_prev"], auto_h_prev) < 1e-10

    h = rnn_step(p, [x], h_prev[None, :])[0]
    J_of_h = lambda h: -anp.log(anp.exp(anp.dot(h, p.U) + p.b2)[y] / anp.sum(anp.exp(anp.dot(h, p.U) + p.b2)))  # noqa: E731
    assert max_rel_error(g["h"], autograd.grad(J_of_h)(h)) < 1e-10


# -------------------------------------------- the seed's notation vs the full gradient

def test_bptt_is_the_sum_of_per_step_contributions_with_carried_dh():
    """B=1: U and b2 are plain sums of the per-step dJ(t)/dU, dJ(t)/db2; for
    b1, I, H, L the "at (t)" terms alone miss the paths through later steps;
    carrying dJ/dh back with the (corrected) h_prev formula recovers them."""
    p, inputs, targets, h0 = random_instance(V=6, d=3, Dh=4, B=1, T=5, seed=3)
    _, full, _ = bptt(p, inputs, targets, h0)
    x, y = inputs[0], targets[0]
    hs = [h0[0]]
    for t in range(len(x)):
        hs.append(rnn_step(p, [x[t]], hs[-1][None, :])[0])

    at_t = {k: np.zeros_like(v) for k, v in full.items()}
    summed = {k: np.zeros_like(v) for k, v in full.items()}
    carry = np.zeros(p.Dh)
    for t in reversed(range(len(x))):
        g = step_gradients(p, x[t], y[t], hs[t])
        at_t["U"] += g["U"]; at_t["b2"] += g["b2"]; at_t["b1"] += g["b1"]  # noqa: E702
        at_t["I"] += g["I"]; at_t["H"] += g["H"]; at_t["L"][x[t]] += g["L_x"]  # noqa: E702
        dh = g["h"] + carry                             # dJ/dh(t) from J(t) and from later steps
        delta1 = dh * hs[t + 1] * (1 - hs[t + 1])      # dJ/db1 at (t), all losses
        summed["b1"] += delta1
        summed["H"] += np.outer(hs[t], delta1)
        summed["I"] += np.outer(p.L[x[t]], delta1)
        summed["L"][x[t]] += delta1 @ p.I.T
        carry = delta1 @ p.H.T                          # the h_prev formula: δ1 Hᵀ
    summed["U"], summed["b2"] = at_t["U"], at_t["b2"]
    for name in PARAM_NAMES:
        assert np.allclose(summed[name], full[name], rtol=1e-12, atol=1e-13), name
    for name in ["U", "b2"]:
        assert np.allclose(at_t[name], full[name], rtol=1e-12, atol=1e-13)
    for name in ["b1", "I", "H", "L"]:
        assert max_rel_error(at_t[name], full[name]) > 1e-3, name


def test_seed_formulas_literally_are_the_negative_gradient():
    p, inputs, targets, h0 = random_instance(V=7, d=3, Dh=4, seed=5)
    x, y, h_prev = int(inputs[0, 0]), int(targets[0, 0]), h0[0:1]     # h_prev is a 1×Dh row
    true = step_gradients(p, x, y, h_prev[0])
    # The seed's solution, coded literally with row vectors.
    e = p.L[x][None, :]
    z1 = h_prev @ p.H + e @ p.I + p.b1
    h = 1 / (1 + np.exp(-z1))
    yhat = np.exp(h @ p.U + p.b2); yhat /= yhat.sum()  # noqa: E702
    yv = np.eye(p.V)[y][None, :]
    seed = {"U": h.T @ (yv - yhat), "h": (yv - yhat) @ p.U.T, "b2": yv - yhat}
    seed["b1"] = seed["h"] * (h * (1 - h))
    seed["L_x"] = seed["b1"] @ p.I.T
    seed["I"] = e.T @ seed["b1"]
    seed["H"] = h_prev.T @ seed["b1"]
    for name in ["U", "h", "b2", "b1", "L_x", "I", "H"]:
        assert np.allclose(np.squeeze(seed[name]), -true[name], rtol=1e-12, atol=1e-14), name
        assert not np.allclose(np.squeeze(seed[name]), true[name]), name
    # dJ/dh(t-1) = Hᵀ · dJ/db1 does not conform: (Dh×Dh)(1×Dh).
    with pytest.raises(ValueError):
        p.H.T @ seed["b1"]
    # Read with column vectors it is (δ1 H)ᵀ, not δ1 Hᵀ: the order matters.
    as_column = (p.H.T @ seed["b1"].T).T[0]
    assert np.allclose(-(seed["b1"] @ p.H.T)[0], true["h_prev"], rtol=1e-12)
    assert not np.allclose(-as_column, true["h_prev"], rtol=1e-3)


# ------------------------------------------------------- precision and extremes

def test_float32_agrees_with_float64():
    p64, inputs, targets, h0 = random_instance(V=50, d=8, Dh=16, B=4, T=6, seed=7)
    p32 = p64.astype("float32")
    loss64, g64, h64 = bptt(p64, inputs, targets, h0)
    loss32, g32, h32 = bptt(p32, inputs, targets, h0.astype(np.float32))
    assert all(g.dtype == np.float32 for g in g32.values())
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    for name in PARAM_NAMES:
        assert max_rel_error(g32[name], g64[name]) < 1e-4, name
    assert np.allclose(h32, h64, atol=1e-5)


@pytest.mark.parametrize("scale", [1e2, 1e4])
def test_extreme_inputs_no_nan_no_warning(scale):
    p, inputs, targets, h0 = random_instance(V=9, d=3, Dh=5, B=2, T=3, seed=9)
    p.U *= scale; p.b2 *= scale; p.H *= scale; p.I *= scale; p.b1 *= scale  # noqa: E702
    p.U[:, 0] = scale; p.b2[0] = scale                  # logits of order +-1e4 and more
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        for dtype in ("float64", "float32"):
            q = p.astype(dtype)
            loss, grads, h = bptt(q, inputs, targets, h0.astype(dtype))
            losses, _ = forward_losses(q, inputs, targets, h0.astype(dtype))
            probs = output_probs(q, h)
            assert np.isfinite(loss) and np.isfinite(losses).all() and np.isfinite(probs).all()
            assert all(np.isfinite(g).all() for g in grads.values())
            assert loss == pytest.approx(losses.sum(), rel=1e-4)
            g = step_gradients(q, int(inputs[0, 0]), int(targets[0, 0]), h0[0].astype(dtype))
            assert all(np.isfinite(v).all() for v in g.values())


def test_forward_losses_match_bptt_loss_and_probabilities():
    p, inputs, targets, h0 = random_instance(V=8, d=3, Dh=4, B=3, T=5, seed=11)
    loss, _, h_last = bptt(p, inputs, targets, h0)
    losses, h2 = forward_losses(p, inputs, targets, h0)
    assert losses.shape == inputs.shape
    assert losses.sum() == pytest.approx(loss, rel=1e-12)
    assert np.allclose(h_last, h2, rtol=1e-13, atol=1e-15)      # scoring's compiled loop: equal to rounding
    # position (b,t) loss equals -log of the stepped model's probability
    h = h0
    for t in range(inputs.shape[1]):
        h = rnn_step(p, inputs[:, t], h)
        probs = output_probs(p, h)
        assert np.allclose(probs.sum(axis=1), 1.0)
        assert np.allclose(-np.log(probs[np.arange(3), targets[:, t]]), losses[:, t], rtol=1e-12)


def test_params_init_and_shapes():
    p = Params.init(V=13, d=4, Dh=6, seed=1)
    assert p.dtype == np.float32 and (p.V, p.d, p.Dh) == (13, 4, 6)
    assert {k: v.shape for k, v in p.as_dict().items()} == dict(
        L=(13, 4), I=(4, 6), H=(6, 6), U=(6, 13), b1=(6,), b2=(13,))
    q = Params.init(V=13, d=4, Dh=6, seed=1, dtype="float64")
    assert np.allclose(q.L, p.L, atol=1e-7) and not np.array_equal(Params.init(13, 4, 6, seed=2).L, p.L)
    assert np.abs(p.L).max() <= 0.1 and np.abs(p.H).max() <= np.sqrt(6 / 12) and not p.b1.any()
    r = Params.from_dict(p.as_dict())
    assert all(np.array_equal(a, b) for a, b in zip(r.as_dict().values(), p.as_dict().values()))
    bad = p.as_dict() | {"U": np.zeros((6, 12), np.float32)}
    with pytest.raises(ValueError, match="U"):
        Params.from_dict(bad)
    with pytest.raises(ValueError):
        Params.init(3, 2, 2, dtype="int32")
