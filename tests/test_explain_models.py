"""The equation language: a user's model file is read, flattened and
derived like the seed's; every mistake in it is one line naming the file,
the line and the symbol."""
import pytest

from elman.cli import main
from elman.explain import engine, equations, explain
from elman.explain.equations import ModelError, parse

HEAD = """dim D = 3, Dh = 4, V = 5
input  x  : D
target y  : onehot(V)
param  W1 : D x Dh
param  b1 : Dh
param  W2 : Dh x V
param  b2 : V
"""


def test_issue_mlp_one_line_with_semicolons():
    m = parse(HEAD + "h = relu(x W1 + b1); yhat = softmax(h @ W2 + b2)\nJ = cross_entropy(yhat, y)\n", "m.eq")
    assert [(e.lhs, e.kind) for e in m.equations] == [
        ("z1", "affine"), ("h", "func"), ("z2", "affine"), ("yhat", "func"), ("J", "loss")]
    d = engine.derive(m)
    assert set(d.steps) == {"z2", "h", "z1", "W2", "b2", "x", "W1", "b1"}


def test_shared_weight_adds_contributions():
    """A weight used twice (fan-out): the engine adds both uses, checked by finite differences."""
    src = """dim D = 3
input x : D
target y : onehot(D)
param W : D x D
param c : D
a = tanh(x W)
yhat = softmax(a W - x + c)
J = cross_entropy(yhat, y)
"""
    m = parse(src, "tied.eq")
    d = engine.derive(m)
    assert len(d.steps["W"].contribs) == 2 and len(d.steps["x"].contribs) == 2
    assert d.steps["W"].error < 1e-6 and d.steps["x"].error < 1e-6
    text = " ".join(explain(["W", "x"], model=m).text().split())
    assert "W is used in 2 places: on line 7 (product, the matrix on the right) and on line 6" in text
    # both terms shown, summed
    assert "the multivariate chain rule adds the paths, one term each: dJ/dW = aᵀ δ2 + xᵀ δ1." in text
    assert "dJ/dx = −δ2 + δ1 Wᵀ" in text


BAD = [
    ("h = softplus(x W1 + b1)", 8, "unknown function `softplus`"),
    ("h = relu(x W3 + b1)", 8, "`W3` is used but never declared or defined"),
    ("h = relu(x W1 + b1 + q)\nq = x W1", 8, "`q` is used before the line that defines it (line 9)"),
    ("h = relu(x W2 + b1)", 8, "`x W2` does not conform: (1×D)(Dh×V)"),
    ("h = relu(x W1 + b2)", 8, "the terms of `z1` have different shapes: 1×Dh and 1×V"),
    ("W1 = x W1", 8, "`W1` is declared as param; it cannot be assigned"),
    ("h = relu(x W1 + b1) $", 8, "unexpected character '$'"),
    ("h = relu(x W1 + b1))", 8, "unexpected `)`"),
    ("h = relu(x W1 + b1)\nh = relu(x W1 + b1)", 9, "`h` is assigned twice"),
    ("h = relu x", 8, "`relu` is a function: write relu(...)"),
    ("h = W1 x", 8, "the left factor `W1` must be a row vector"),
    ("h = relu(x W1 + b1)\nyhat = softmax(h W2 + b2)", None, "need exactly one loss line"),
    ("h = relu(x W1 + b1)\nyhat = softmax(h W2 + b2)\nJ = cross_entropy(h, y)", 10,
     "`h` must be defined as softmax(...)"),
]


@pytest.mark.parametrize("body,line,message", BAD)
def test_model_errors_name_line_and_symbol(body, line, message):
    if "loss" not in message and "softmax(...)" not in message:
        body += "\nyhat = softmax(h W2 + b2)\nJ = cross_entropy(yhat, y)"
    with pytest.raises(ModelError) as info:
        parse(HEAD + body + "\n", "bad.eq")
    text = str(info.value)
    assert message in text
    assert text.startswith(f"bad.eq:{line}:" if line else "bad.eq:")
    assert "\n" not in text


def test_declaration_errors():
    cases = [("dim D = 3\ninput x : D x K\n", "bad.eq:2: size `K` is not a declared dim"),
             ("dim D = 3\ninput x : D\ninput x : D\n", "bad.eq:3: `x` is declared twice (first on line 2)"),
             (HEAD + "param W9 : D x D\nh = relu(x W1 + b1)\nyhat = softmax(h W2 + b2)\nJ = cross_entropy(yhat, y)\n",
              "bad.eq:8: `W9` is declared but never used"),
             (HEAD + "input hp : Dh\nrecur hp <- yhat\nh = relu(x W1 + hp + b1)\nyhat = softmax(h W2 + b2)\n"
              "J = cross_entropy(yhat, y)\n", "bad.eq:9: `hp` is 1×Dh but `yhat` is 1×V")]
    for src, message in cases:
        with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse(src, "bad.eq")


def test_cli_model_file_error_is_one_line(tmp_path, capsys):
    f = tmp_path / "bad.eq"
    f.write_text(HEAD + "h = relu(x W1 + b1)\nyhat = softmax(h Q + b2)\nJ = cross_entropy(yhat, y)\n")
    assert main(["explain", "W1", "--model-file", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{f}:9: `Q` is used but never declared" in err
    assert main(["explain", "--model-file", str(tmp_path / "missing.eq")]) == 2
    assert "cannot read model file" in capsys.readouterr().err


def test_user_model_file_explained(tmp_path, capsys):
    f = tmp_path / "mine.eq"
    f.write_text(HEAD + "h = relu(x W1 + b1); yhat = softmax(h W2 + b2); J = cross_entropy(yhat, y)\n")
    assert main(["explain", "W1", "b2", "--model-file", str(f), "--verify"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "dJ/dW1 = xᵀ δ1 = xᵀ ((ŷ − y) W2ᵀ ⊙ [z1 > 0])" in out
    assert "Verification" in out and "FAIL" not in out


def test_bundled_models_have_distinct_dims():
    for name in ("seed", "mlp", "tanh_rnn"):
        m = equations.load(name)
        assert len(set(m.dims.values())) == len(m.dims)
        assert all(d.isdigit() or d in m.dims for s in m.shapes.values() for d in s)
