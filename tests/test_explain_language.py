"""The equation language's constructs for recurrent cells: element-wise
products, numbers, transposed parameters, several recur lines, lookups
stored when parsed; each derives and passes its finite-difference checks,
and each mistake is one line naming the file, the line and the symbol."""
import numpy as np
import pytest

from elman.cli import main
from elman.explain import engine, equations, explain, numeric
from elman.explain.equations import ModelError, parse
from elman.explain.through_time import through_time

ROWS = """dim D = 3, Dh = 4, V = 5
input  x : D
input  a : Dh
target y : onehot(V)
param  W : D x Dh
param  U : Dh x V
param  b : V
"""


def _out(body):
    """A model whose h is given by ``body``; the output layer after it."""
    return ROWS + body + "\nyhat = softmax(h U + b)\nJ = cross_entropy(yhat, y)\n"


@pytest.mark.parametrize("body,ops", [
    ("g = sigmoid(x W); h = g * a", ["had"]),
    ("g = sigmoid(x W); h = g ⊙ a", ["had"]),
    ("g = sigmoid(x W); h = (1 - g) * a + g * tanh(x W)", ["had", "had"]),
    ("h = 0.5 * x W - 2 * a + 1", ["mul", "plain", "const"]),
    ("h = a * 0.25 * tanh(a) + x W", ["had", "mul"]),
])
def test_elementwise_products_and_numbers_derive_and_verify(body, ops):
    m = parse(_out(body), "cell.eq")
    h = m.definition("h")
    assert [t.op for t in h.terms] == ops
    for seed in range(3):
        d = engine.derive(m, seed=seed)
        assert max(s.error for s in d.steps.values()) < 1e-6
    assert explain(["all"], model=m, verify=True).ok


def test_coefficients_are_kept_and_shown():
    m = parse(_out("h = 0.5 * x W - 2 * a + 1"), "c.eq")
    terms = m.definition("h").terms
    assert [(t.sign, t.coef) for t in terms] == [(1, 0.5), (-1, 2.0), (1, 1.0)]
    t = " ".join(explain(["a", "W"], model=m).text().split())
    assert "dJ/da = −2 dJ/dh" in t and "dJ/dW = 0.5 xᵀ dJ/dh" in t
    assert "The number 1 in h depends on nothing: its derivative is 0" in t


def test_one_minus_gate_explains_the_sign_and_the_sum():
    t = " ".join(explain(["z"], model="gru").text().split())
    assert "t2 = 1 − z" in t and "dJ/dz = −dJ/dt2" in t
    assert "This is where the minus sign of a gate's (1 − z) comes from." in t
    assert "z is used in 2 places" in t and "dJ/dz = dJ/dh ⊙ h(t−1) − dJ/dt2" in t
    # the Hadamard rule, in index form, and why it is diagonal
    assert "∂h_k/∂z_j = h(t−1)_j if k = j, else 0" in t
    assert "the diagonal matrix diag(h(t−1))" in t and "It is not a matrix product" in t


def test_transposed_parameter_both_spellings():
    src = ROWS.replace("param  U : Dh x V", "param  U : V x Dh") + "h = tanh(x W + a)\nyhat = softmax(h U.T + b)\n" \
        "J = cross_entropy(yhat, y)\n"
    a, b = parse(src, "t.eq"), parse(src.replace("U.T", "Uᵀ"), "t.eq")
    assert [e.terms for e in a.equations] == [e.terms for e in b.equations]
    assert a.definition("z2").terms[0].op == "mulT"
    d = engine.derive(a)
    assert d.steps["U"].error < 1e-6 and d.steps["h"].error < 1e-6
    t = " ".join(explain(["U", "h"], model=a).text().split())
    assert "dJ/dU = δ2ᵀ h" in t and "dJ/dh = δ2 U" in t
    assert "the outer product the other way round" in t and "the shape of Uᵀ, not of U" in t
    assert "δ2ᵀ h: (|V|×1)(1×Dh) = |V|×Dh, the shape of U ✓" in t


def test_tied_model_explains_the_sum_of_two_uses():
    t = " ".join(explain(["E", "E_x"], model="tied").text().split())
    assert "dJ/dE = δ2ᵀ h + xᵀ dJ/de" in t
    assert "E is used in 2 places" in t and "the multivariate chain rule adds the paths" in t
    assert "dJ/dE_x = x (δ2ᵀ h) + dJ/de" in t
    assert "the one-hot row x times it picks out row x," in t


TWO_READS = """dim V = 3, d = 2
input  x1 : onehot(V)
input  x2 : onehot(V)
target y  : onehot(V)
param  L_in : V x d
param  U : d x V
e1 = x1 L_in; e2 = x2 L_in
h = tanh(e1 + 0.5 * e2)
yhat = softmax(h U)
J = cross_entropy(yhat, y)
"""


def test_one_embedding_read_twice_with_any_ids():
    """L_in (an underscore in the name) read by two one-hot inputs: its rows
    are targets found from the stored pair, and the gradient of a row
    counts both reads when the two ids coincide."""
    m = parse(TWO_READS, "two.eq")
    assert m.lookups == {"L_in_x1": ("L_in", "x1"), "L_in_x2": ("L_in", "x2")}
    same = 0
    for seed in range(12):
        d = engine.derive(m, seed=seed)
        x1, x2 = (numeric.onehot_index(d.inputs[n]) for n in ("x1", "x2"))
        same += x1 == x2
        full = numeric.finite_difference(m, d.inputs, "L_in")
        assert numeric.agree(d.steps["L_in_x1"].value, full[[x1]]) < 1e-6
        assert numeric.agree(d.steps["L_in_x2"].value, full[[x2]]) < 1e-6
    assert 0 < same < 12, "both cases, the same word and two words, were tried"
    t = " ".join(explain(["L_in_x1"], model=m, verify=True).text().split())
    assert "dJ/dL_in_x1 = x1 (x2ᵀ dJ/de2) + dJ/de1" in t and "FAIL" not in t
    assert "e1_j = Σ_v x1_v L_in_vj = L_in_x1j (row x1 of L_in)" in t
    assert "is 1 when the two words are the same and 0 otherwise" in t


def test_two_recur_lines_are_both_carried():
    m = equations.load("elman2")
    assert m.recur == {"h1_prev": "h1", "h2_prev": "h2"} and m.states == ["h1", "h2"]
    tt = through_time(engine.derive(m), T=3)
    assert set(tt.state_errors) == {"h1", "h2"} and max(tt.state_errors.values()) < 1e-6
    data = explain(["bptt"], model=m).document.data["targets"][0]
    assert data["recurrences"]["h1"]["text"] == "dJ/dh1(t) = δ2(t) I2ᵀ + δ1(t+1) H1ᵀ"
    assert data["recurrences"]["h2"]["text"] == "dJ/dh2(t) = δ3(t) Uᵀ + δ2(t+1) H2ᵀ"


BAD = [
    ("h = a.T", "`aᵀ` may only stand on the right of a product (h a.T)"),
    ("h = x a.T", "only a declared param may be transposed, and `a` is not one"),
    ("h = x W.T", "`x Wᵀ` does not conform: (1×D)(Dh×D)"),
    ("h = W.T", "`Wᵀ` may only stand on the right of a product"),
    ("h = a * x W + a * U", "`a ⊙ U` multiplies rows entry by entry; `U` is Dh×V"),
    ("h = a * x W + x", "the terms of `h` have different shapes: 1×Dh and 1×D"),
    ("h = a * x", "`a ⊙ x` needs two rows of one shape: 1×Dh and 1×D"),
    ("h = 2 a", "a number multiplies with `*`, not by juxtaposition (write 2 * ...)"),
    ("h = x W + a + 1 + 2 * 3", None),
    ("h = 1 + 2", "`h` is a constant"),
    ("h = tanh(3)", "the number 3 stands where a vector or matrix is needed"),
    ("h = tanh(1 - 2)", "`z1` is a constant"),
    ("h = a % 2", "unexpected character '%'"),
]


@pytest.mark.parametrize("body,message", BAD)
def test_construct_errors_name_line_and_symbol(body, message):
    src = _out(body)
    if message is None:                         # a sum with numbers in it is fine
        parse(src, "bad.eq")
        return
    with pytest.raises(ModelError) as info:
        parse(src, "bad.eq")
    text = str(info.value)
    assert text.startswith("bad.eq:8:") and message in text and "\n" not in text


LOOKUP = """dim V = 3, d = 2
input  x : onehot(V)
target y : onehot(V)
param  W : V x d
param  U : d x V
"""


@pytest.mark.parametrize("src,message", [
    (ROWS.replace("dim D = 3", "dim D = 3.5"), "bad.eq:1: dim `D` must be a whole number of at least 1, not 3.5"),
    (ROWS.replace("dim D = 3", "dim D = 0"), "bad.eq:1: dim `D` must be a whole number"),
    (ROWS + "recur a <- h\nrecur a <- h\n", "bad.eq:9: `a` already reads a state (line 8)"),
    (LOOKUP + "W_x = x W\nyhat = softmax(W_x U)\nJ = cross_entropy(yhat, y)\n",
     "bad.eq:6: `W_x` names the row of `W` that `x` looks up; rename the quantity called so"),
])
def test_declaration_and_lookup_errors(src, message):
    with pytest.raises(ModelError) as info:
        parse(src + "h = x W + a\nyhat = softmax(h U + b)\nJ = cross_entropy(yhat, y)\n" if "U : Dh" in src
              else src, "bad.eq")
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_an_engine_failure_is_one_line_naming_file_line_and_quantity(monkeypatch, capsys):
    """Were a rule ever wrong, the check that catches it speaks like every
    other error: here every check is made to fail."""
    monkeypatch.setattr(numeric, "TOL", -1.0)
    assert main(["explain", "all", "--model-file", "gru"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("elman: error: gru.eq:22: dJ/dz4 = yhat - y fails its numerical check")


def test_shipped_models_verify_through_time_on_other_sizes(capsys):
    for name in ("gru", "lstm", "tied", "elman2"):
        assert main(["explain", "bptt", "--model-file", name, "--verify"]) == 0
        out = capsys.readouterr().out
        assert "Σ_t" in out and "(t)" in out and "FAIL" not in out
        rows = [ln for ln in out.splitlines() if ln.rstrip().endswith(" pass")]
        assert any(ln.split()[0].endswith("(t)") for ln in rows)
