"""The shipped recurrent cells (gru, lstm, tied, elman2): every formula the
engine derives, one step and through time, against HIPS autograd on forward
passes written out by hand below (not parsed from the .eq files), on several
random instances and sizes; and the engine's own finite-difference checks."""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest

from elman.explain import engine, equations, numeric
from elman.explain.through_time import through_time
from helpers import sigmoid_ref as sig

SHIPPED = ["gru", "lstm", "tied", "elman2"]


def xent(z, y):
    z = z[0]
    m = anp.max(z)
    return m + anp.log(anp.sum(anp.exp(z - m))) - z[y]


def _plus(e, k, v):
    """v, plus ``e[k]`` when given: a state nudged where it is computed, so
    that the gradient in e[k] is dJ/d(state) at that step."""
    return v if e is None else v + e[k]


def gru(P, x, y, st, e=None):
    """PyTorch's torch.nn.GRU cell, row vectors, then a softmax output."""
    hp = st["h"]
    r = sig(x @ P["Wr"] + hp @ P["Ur"] + P["b_r"])
    z = sig(x @ P["Wz"] + hp @ P["Uz"] + P["b_z"])
    n = anp.tanh(x @ P["Wn"] + P["b_n"] + r * (hp @ P["Un"] + P["b_hn"]))
    h = _plus(e, "h", (1 - z) * n + z * hp)
    return {"h": h}, xent(h @ P["Wy"] + P["by"], y)


def lstm(P, x, y, st, e=None):
    hp, cp = st["h"], st["c"]
    gate = lambda k, f: f(x @ P["W" + k] + hp @ P["U" + k] + P["b_" + k])  # noqa: E731
    i, f, g, o = gate("i", sig), gate("f", sig), gate("g", anp.tanh), gate("o", sig)
    c = _plus(e, "c", f * cp + i * g)
    h = _plus(e, "h", o * anp.tanh(c))
    return {"h": h, "c": c}, xent(h @ P["Wy"] + P["by"], y)


def tied(P, x, y, st, e=None):
    h = _plus(e, "h", anp.tanh(st["h"] @ P["H"] + (x @ P["E"]) @ P["I"] + P["b1"]))
    return {"h": h}, xent(h @ P["E"].T + P["b2"], y)


def elman2(P, x, y, st, e=None):
    h1 = _plus(e, "h1", sig(st["h1"] @ P["H1"] + (x @ P["L"]) @ P["I1"] + P["b1"]))
    h2 = _plus(e, "h2", sig(st["h2"] @ P["H2"] + h1 @ P["I2"] + P["b2"]))
    return {"h1": h1, "h2": h2}, xent(h2 @ P["U"] + P["b3"], y)


CELL = {"gru": gru, "lstm": lstm, "tied": tied, "elman2": elman2}
SIZES = [None, dict(D=2, Dh=5, V=3, d=2, D1=3, D2=2), dict(D=4, Dh=2, V=6, d=5, D1=2, D2=4)]


def _dims(model, k):
    return None if SIZES[k] is None else {n: SIZES[k][n] for n in model.dims}


def _label(v):
    return int(np.argmax(v))


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("k", range(3))
def test_one_step_equals_autograd(name, k):
    model = equations.load(name)
    d = engine.derive(model, seed=20 + k, dims=_dims(model, k))
    assert max(s.error for s in d.steps.values()) < 1e-6
    P = {n: d.inputs[n] for n in model.params}
    st = {s: d.inputs[i] for i, s in model.recur.items()}
    x, y = d.inputs["x"], _label(d.inputs["y"])
    g = autograd.grad(lambda P, st: CELL[name](P, x, y, st)[1], (0, 1))(P, st)
    for n in model.params:
        assert np.allclose(g[0][n], d.steps[n].value, rtol=1e-9, atol=1e-12), n
    for i, s in model.recur.items():
        assert np.allclose(g[1][s], d.steps[i].value, rtol=1e-9, atol=1e-12), i


def _unrolled(name, model, steps):
    """Σ_t J(t) as a function of the parameters and of an addition to each
    state at each step (its gradient there is dJ/dstate(t))."""
    def total(P, eps):
        st = {s: steps[0][i] for i, s in model.recur.items()}
        out = 0.0
        for t, s in enumerate(steps):
            st, J = CELL[name](P, s["x"], _label(s["y"]), st, eps[t])
            out = out + J
        return out
    return total


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("k", range(3))
def test_through_time_equals_autograd(name, k):
    model = equations.load(name)
    d = engine.derive(model, seed=30 + k, dims=_dims(model, k))
    T = 4
    tt = through_time(d, T=T)
    steps = numeric.sequence(model, T, d.seed, d.dims)
    P = {n: steps[0][n] for n in model.params}
    eps = [{s: np.zeros_like(steps[0][i]) for i, s in model.recur.items()} for _ in range(T)]
    gP, geps = autograd.grad(_unrolled(name, model, steps), (0, 1))(P, eps)
    for n in model.params:
        assert np.allclose(gP[n], tt.values[n], rtol=1e-9, atol=1e-12), n
    for s in model.states:
        want = np.stack([geps[t][s] for t in range(T)])
        assert np.allclose(want, tt.state_values[s], rtol=1e-9, atol=1e-12), s
    assert max(tt.errors.values()) < 1e-6 and max(tt.state_errors.values()) < 1e-6


def test_several_states_each_have_a_recurrence():
    lstm_d = engine.derive(equations.load("lstm"))
    tt = through_time(lstm_d)
    assert tt.states == ["c", "h"]
    # the cell's direct path is f(t+1); dropping h's carried term is measurably wrong (the "just f" story)
    assert tt.own_path_only["c"] > 1e-3 and tt.own_path_only["h"] > 1e-3
    tt2 = through_time(engine.derive(equations.load("elman2")))
    # the lower layer feeds the upper one, not the other way round
    assert tt2.own_path_only["h1"] > 1e-3 and tt2.own_path_only["h2"] < 1e-6


def test_tied_embedding_adds_both_uses():
    d = engine.derive(equations.load("tied"))
    rules = [k.rule for k in d.steps["E"].contribs]
    assert rules == ["product, a transposed matrix on the right", "product, the matrix on the right"]
    # row x of E: the lookup's dJ/de plus row x of the output's δ2ᵀ h
    assert [k.rule for k in d.steps["E_x"].contribs] == ["the looked-up row, from another use",
                                                         "embedding lookup (one-hot product)"]
    full = d.steps["E"].fd
    assert np.allclose(d.steps["E_x"].value, full[[_label(d.inputs["x"])]], rtol=1e-8)
