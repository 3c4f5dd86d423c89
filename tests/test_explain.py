"""The explainer's engine, checked three ways: every formula it derives
against central finite differences (the engine's own check, repeated here
on other random instances and sizes), against HIPS autograd on forward
passes written out by hand below (not parsed from the .eq files), and, for
the seed's model, against elman's own backward pass."""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest

from elman.explain import engine, equations, explain, numeric, transpose_answer
from elman.explain.through_time import through_time
from elman.explain import expr as E
from elman.model.gradcheck import step_loss
from elman.model import step_gradients

SIZES = [None, dict(V=3, d=2, Dh=5), dict(V=7, d=4, Dh=2)]


def _dims(model, sizes, k):
    """The model's dims, or a permutation of the given sizes onto them."""
    if sizes is None:
        return None
    vals = list(sizes.values())
    return {d: vals[(i + k) % len(vals)] for i, d in enumerate(model.dims)}


@pytest.mark.parametrize("name", ["seed", "mlp", "tanh_rnn"])
@pytest.mark.parametrize("k", range(3))
def test_every_derived_formula_equals_finite_differences(name, k):
    model = equations.load(name)
    d = engine.derive(model, seed=10 + k, dims=_dims(model, SIZES[k], k))
    assert len(d.steps) >= 8
    for n, step in d.steps.items():
        fd = numeric.finite_difference(model, d.inputs, n) if n in model.shapes else None
        if fd is not None:
            assert numeric.agree(step.value, fd) < 1e-6, n
        assert step.error < 1e-6, n
        # the closed form (adjoints substituted) has the same value
        assert np.allclose(E.evaluate(d.expanded(n), d.env), step.value, rtol=1e-12, atol=1e-14), n


def logsumexp(z):
    m = anp.max(z)
    return m + anp.log(anp.sum(anp.exp(z - m)))


def _ag_check(d, loss, names):
    """autograd's gradient of a hand-written loss in each named argument."""
    args = [d.inputs[n] for n in names]
    for i, n in enumerate(names):
        g = autograd.grad(loss, i)(*args)
        assert np.allclose(g, d.steps[n].value, rtol=1e-9, atol=1e-12), n


def test_mlp_formulas_equal_autograd():
    model = equations.load("mlp")
    for seed in range(3):
        d = engine.derive(model, seed=seed)
        y = int(np.argmax(d.inputs["y"]))

        def loss(x, W1, b1, W2, b2):
            h = anp.maximum(anp.dot(x, W1) + b1, 0.0)
            z = (anp.dot(h, W2) + b2)[0]
            return logsumexp(z) - z[y]
        _ag_check(d, loss, ["x", "W1", "b1", "W2", "b2"])


def test_tanh_rnn_step_and_sequence_equal_autograd():
    model = equations.load("tanh_rnn")
    d = engine.derive(model, seed=4)
    y = int(np.argmax(d.inputs["y"]))

    def step(h_prev, x, Wh, Wx, b, Wy, by, y):
        h = anp.tanh(anp.dot(h_prev, Wh) + anp.dot(x, Wx) + b)
        z = (anp.dot(h, Wy) + by)[0]
        return h, logsumexp(z) - z[y]

    _ag_check(d, lambda *a: step(*a, y)[1], ["h_prev", "x", "Wh", "Wx", "b", "Wy", "by"])

    tt = through_time(d, T=4)
    steps = numeric.sequence(model, 4, d.seed, d.dims)
    names = ["Wh", "Wx", "b", "Wy", "by"]

    def total(*params):
        h, out = steps[0]["h_prev"], 0.0
        for s in steps:
            h, J = step(h, s["x"], *params, int(np.argmax(s["y"])))
            out = out + J
        return out
    for i, n in enumerate(names):
        g = autograd.grad(total, i)(*[steps[0][m] for m in names])
        assert np.allclose(g, tt.values[n], rtol=1e-9, atol=1e-12), n
        # and without the carried term the sum is not the gradient (the seed's "at (t)" terms)
        if n in ("Wh", "Wx", "b"):
            assert not np.allclose(g, tt.local_only[n], rtol=1e-3)


def test_seed_formulas_equal_elmans_backward_and_its_forward():
    model = equations.load("seed")
    for seed in range(3):
        d = engine.derive(model, seed=seed)
        g = numeric.seed_gradients(d.inputs)
        assert set(g) == {"U", "h", "b2", "b1", "L_x", "I", "H", "h_prev"}
        for n, v in g.items():
            assert np.allclose(v, d.steps[n].value, rtol=1e-12, atol=1e-15), n
        # the .eq forward pass is the project's forward pass
        p = numeric.seed_params(d.inputs)
        J = step_loss(p, int(np.argmax(d.inputs["x"])), int(np.argmax(d.inputs["y"])), d.inputs["h_prev"][0])
        assert abs(J - d.env["J"]) < 1e-12


def test_seed_bptt_equals_elman_bptt():
    model = equations.load("seed")
    d = engine.derive(model)
    tt = through_time(d, T=5)
    ref = numeric.seed_bptt(numeric.sequence(model, 5, 0, dict(model.dims)))
    for n in ("L", "I", "H", "U", "b1", "b2"):
        assert np.allclose(ref[n].reshape(tt.values[n].shape), tt.values[n], rtol=1e-12, atol=1e-15), n
        assert tt.errors[n] < 1e-6


def test_flattening_names_the_seed_quantities():
    m = equations.load("seed")
    assert [e.lhs for e in m.equations] == ["e", "z1", "h", "z2", "yhat", "J"]
    assert m.shapes["z1"] == ("1", "Dh") and m.shapes["z2"] == ("1", "V")
    assert m.recur == {"h_prev": "h"}
    assert numeric.is_seed(m) and not numeric.is_seed(equations.load("mlp"))


def test_column_forms_are_the_row_forms_transposed():
    for name in ("seed", "mlp", "tanh_rnn"):
        model = equations.load(name)
        d = engine.derive(model, seed=3)
        for wform in (False, True):
            env = E.column_env(d.env, model, wform)
            for n, step in d.steps.items():
                flipped = n not in model.shapes or E.is_flipped(model, n, wform)
                col = E.to_column(step.expr, model, flipped, wform)
                want = step.value.T if flipped else step.value
                assert np.allclose(E.evaluate(col, env), want, rtol=1e-12, atol=1e-15), (name, n, wform)


# ------------------------------------------------------------- the U answer

def flat(text):
    """Paragraphs are wrapped at 78 columns: compare with single spaces."""
    return " ".join(text.split())


def _u_text(convention):
    return flat(explain(["U"], convention=convention).text())


@pytest.mark.parametrize("convention", ["row", "column"])
def test_U_has_index_step_outer_product_and_shape_check_in_both_conventions(convention):
    t = _u_text(convention)
    # the index-notation step
    assert "z2_j = Σ_i h_i U_ij" in t
    assert "∂z2_k/∂U_ij = h_i if k = j, else 0" in t
    assert "dJ/dU_ij = Σ_k δ2_k ∂z2_k/∂U_ij = δ2_j h_i" in t
    # the outer product, row convention
    assert "(hᵀ δ2)_ij = h_i δ2_j" in t and "outer product" in t
    assert "the column hᵀ (Dh×1) times the row δ2 (1×|V|)" in t
    # the shape check, row convention
    assert "hᵀ δ2: (Dh×1)(1×|V|) = Dh×|V|, the shape of U ✓" in t
    # the column convention: index step, outer product, shape check, the transpose relation
    assert "z2_j = Σ_i Ũ_ji h_i" in t
    assert "dJ/dŨ = δ2 hᵀ: (|V|×1)(1×Dh) = |V|×Dh, the shape of Ũ" in t
    assert "dJ/dU = h δ2ᵀ: (Dh×1)(1×|V|) = Dh×|V|" in t
    assert "dJ/dŨ = δ2 hᵀ = (hᵀ δ2)ᵀ = (dJ/dU)ᵀ" in t
    # the seed's difference
    assert "sign-flipped" in t and "−dJ/dz2" in t
    summary = next(p for p in explain(["U"], convention=convention).text().split("\n\n") if " = " in p.split("\n")[0] and p.startswith("dJ/d"))
    assert summary.startswith("dJ/dU = hᵀ δ2 = hᵀ (ŷ − y), Dh×|V|" if convention == "row" else
                              "dJ/dŨ = (ŷ − y) hᵀ")


def test_U_witness_is_elmans_backward_against_finite_differences():
    data = explain(["U"]).document.data["targets"][0]
    w = data["witness"]
    assert w["source"].startswith("elman.model.step_gradients")
    d = engine.derive(equations.load("seed"))
    g = step_gradients(numeric.seed_params(d.inputs), int(np.argmax(d.inputs["x"])),
                       int(np.argmax(d.inputs["y"])), d.inputs["h_prev"][0].copy())["U"]
    assert np.array_equal(np.array(w["formula"]), g)
    assert w["max_abs_difference"] == pytest.approx(float(np.abs(g - np.array(w["finite_difference"])).max()))
    assert w["max_abs_difference"] < 1e-8 and w["max_rel_error"] < 1e-7


def test_seed_differences_per_target():
    data = explain(["all"]).document.data
    verdicts = {t["target"]: t["seed"]["verdict"] for t in data["targets"] if "seed" in t}
    assert verdicts == {"U": "sign-flipped", "h": "sign-flipped", "b2": "sign-flipped", "b1": "sign-flipped",
                        "L_x": "sign-flipped", "I": "sign-flipped", "H": "sign-flipped",
                        "h_prev": "non-conforming"}
    assert [t["target"] for t in data["targets"]] == ["U", "h", "b2", "b1", "L_x", "I", "H", "h_prev", "bptt"]
    bptt = data["targets"][-1]
    assert bptt["recurrence"]["text"] == "dJ/dh(t) = δ2(t) Uᵀ + δ1(t+1) Hᵀ"
    assert all(v < 1e-6 for v in bptt["max_rel_error"].values())
    assert all(v < 1e-6 for v in bptt["elman_bptt_vs_fd"].values())
    assert bptt["without_carried_term"]["H"] > 1e-3


def test_other_targets_explain_their_rules():
    t = flat(explain(["h_prev", "b1", "L_x"]).text())
    assert "dJ/dh(t−1) = δ1 Hᵀ" in t and "Hᵀ δ1: (Dh×Dh)(1×Dh) does not conform" in t
    assert "sigmoid′(z1) = h ⊙ (1 − h)" in t
    assert "dJ/dL_x = dJ/de" in t and "row x of L" in t
    t = flat(explain(["W1"], model="mlp").text())
    assert "relu′(z1) = [z1 > 0]" in t and "xᵀ δ1: (D×1)(1×Dh) = D×Dh, the shape of W1 ✓" in t
    assert "Where the seed" not in t


def test_transpose_answer():
    for convention in ("row", "column"):
        a = transpose_answer(convention)
        lines = a.splitlines()
        assert 10 <= len(lines) <= 20 and max(map(len, lines)) < 100
        assert "δ_j h_i" in a and "outer product" in a and "δ hᵀ" in a and "hᵀδ" in a
        if convention == "row":
            assert "z_j = Σ_i h_i U_ij + b2_j" in a and "(Dh×1)(1×|V|) = Dh×|V|, the shape of U" in a
        else:
            assert "z_j = Σ_i W_ji h_i + b2_j" in a and "(|V|×1)(1×Dh) = |V|×Dh, the shape of W" in a
        diff = float(a.rsplit("largest difference over all 20 entries: ", 1)[1].split(".   ")[0])
        assert diff < 1e-8


def test_unknown_target_and_convention_are_errors():
    from elman.errors import ElmanError
    with pytest.raises(ElmanError, match="unknown target 'Q'"):
        explain(["Q"])
    with pytest.raises(ElmanError, match="no `recur`"):
        explain(["bptt"], model="mlp")
    with pytest.raises(ElmanError, match="row or column"):
        explain(["U"], convention="diagonal")
