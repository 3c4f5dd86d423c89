"""`elman check`: verdicts on a table of candidate formulas, the seed's own
eight among them, and a formula evaluator that runs nothing but arithmetic."""
import json

import pytest

from elman.cli import main
from elman.explain import check, seed_notes
from elman.explain.formula import FormulaError

# (formula, wrt, model, convention, verdict, a phrase the explanation must contain)
TABLE = [
    ("h.T @ (yhat - y)", "U", None, "row", "correct", "equals dJ/dU"),
    ("np.outer(h, yhat - y)", "U", None, "row", "correct", "equals dJ/dU"),
    ("h.T @ delta2", "U", None, "row", "correct", "equals dJ/dU"),
    ("delta1 @ H.T", "h_prev", None, "row", "correct", "equals dJ/dh_prev"),
    ("(yhat - y) @ U.T * sigmoid_prime(z1)", "b1", None, "row", "correct", "equals dJ/db1"),
    ("h.T @ (y - yhat)", "U", None, "row", "sign-flipped", "y − ŷ where ŷ − y belongs"),
    ("y - yhat", "b2", None, "row", "sign-flipped", "equals −dJ/db2"),
    ("-(delta1 @ I.T)", "L_x", None, "row", "sign-flipped", "Check the sign"),
    ("(yhat - y).T @ h", "U", None, "row", "transposed", "|V|×Dh where U is Dh×|V|"),
    ("delta1.T @ h_prev", "H", None, "row", "transposed", "(j, i) entry of dJ/dH"),
    ("(y - yhat).T @ h", "U", None, "row", "transposed", "and sign-flipped"),
    ("2 * h.T @ delta2", "U", None, "row", "scaled", "is 2 × dJ/dU"),
    ("0.5 * (yhat - y)", "b2", None, "row", "scaled", "is 1/2 × dJ/db2"),
    ("delta2 @ U.T", "b1", None, "row", "missing-factor", "without the factor sigmoid′(z1) = h * (1 - h)"),
    ("e.T @ (delta2 @ U.T)", "I", None, "row", "missing-factor", "sigmoid′(z1)"),
    ("x.T @ (delta2 @ W2.T)", "W1", "mlp", "row", "missing-factor", "relu′(z1)"),
    ("H.T @ delta1", "h_prev", None, "row", "non-conforming", "`H.T @ delta1` does not conform: (Dh×Dh)(1×Dh)"),
    ("h @ delta2", "U", None, "row", "non-conforming", "`h @ delta2` does not conform: (1×Dh)(1×|V|)"),
    ("delta2 + h", "b2", None, "row", "non-conforming", "element-wise `delta2 + h`"),
    ("h @ U", "U", None, "row", "wrong", "It is 1×|V|, but dJ/dU has the shape of U, Dh×|V|"),
    ("yhat", "b2", None, "row", "wrong", "right shape"),
    ("h.T @ yhat", "U", None, "row", "wrong", "h.T @ (yhat - y)"),
    # the column convention: vectors are columns, matrices transposed (z = Ũ h)
    ("delta2 @ h.T", "U", None, "column", "correct", "equals dJ/dU"),
    ("H.T @ delta1", "h_prev", None, "column", "correct", "equals dJ/dh_prev"),
    ("h.T @ (yhat - y)", "U", None, "column", "non-conforming", "(1×Dh)(|V|×1)"),
    ("h @ delta2.T", "U", None, "column", "transposed", "row vectors, as in the seed"),
    ("W2.T @ delta2", "h", "mlp", "column", "correct", "equals dJ/dh"),
    ("Wh.T @ delta1", "h_prev", "tanh_rnn", "column", "correct", "equals dJ/dh_prev"),
    ("delta1 @ Wh.T", "h_prev", "tanh_rnn", "row", "correct", "equals dJ/dh_prev"),
    ("h_prev.T @ (dJ_dh * (1 - h * h))", "Wh", "tanh_rnn", "row", "correct", "equals dJ/dWh"),
    ("h_prev.T @ dJ_dh", "Wh", "tanh_rnn", "row", "missing-factor", "tanh′(z1) = (1 - h * h)"),
]


@pytest.mark.parametrize("formula,wrt,model,convention,verdict,phrase", TABLE)
def test_verdicts(formula, wrt, model, convention, verdict, phrase):
    v = check(formula, wrt, model=model, convention=convention)
    assert v.verdict == verdict, str(v)
    assert str(v).split()[0] == verdict
    flat = " ".join(v.explanation.split())
    assert phrase in flat, flat
    assert flat.endswith(f"See `elman explain {wrt}" + (f" --model-file {model}.eq`." if model else "`."))


def test_table_covers_every_verdict():
    assert len(TABLE) >= 15
    assert {row[4] for row in TABLE} == {"correct", "sign-flipped", "transposed", "scaled", "missing-factor",
                                         "non-conforming", "wrong"}


def test_the_seeds_own_formulas():
    verdicts = {n: check(f, n).verdict for n, (_, f, _) in seed_notes.SEED.items()}
    assert verdicts == {"U": "sign-flipped", "h": "sign-flipped", "b2": "sign-flipped", "b1": "sign-flipped",
                        "L_x": "sign-flipped", "I": "sign-flipped", "H": "sign-flipped", "h_prev": "non-conforming"}


def test_scaled_reports_the_constant():
    v = check("-3 * h.T @ delta2", "U")
    assert v.verdict == "scaled" and v.detail["scale"] == pytest.approx(-3) and v.detail["scale_text"] == "-3"


@pytest.mark.parametrize("formula", [
    "__import__('os').system('true')", "h.__class__", "open('/etc/passwd')", "[h, U]", "lambda: h",
    "h if U else b2", "np.linalg.inv(H)", "getattr(h, 'T')", "h[0]", "'text'", "h ** U", "sigmoid(z1, out=h)",
    "exec('1')", "(x := h)",
])
def test_only_arithmetic_is_evaluated(formula):
    with pytest.raises(FormulaError):
        check(formula, "U")


def test_unknown_name_and_bad_syntax():
    with pytest.raises(FormulaError, match="unknown name `dh`"):
        check("dh @ U", "U")
    with pytest.raises(FormulaError, match="cannot parse"):
        check("h.T @", "U")


def test_cli_check(capsys):
    assert main(["check", "h.T @ (yhat - y)", "--wrt", "U"]) == 0
    assert capsys.readouterr().out.startswith("correct\n")
    assert main(["check", "H.T @ delta1", "--wrt", "h_prev", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "non-conforming" and data["product"] == "H.T @ delta1"
    assert data["shapes"] == ["Dh×Dh", "1×Dh"] and data["expected"] == "((yhat - y) @ U.T * (h * (1 - h))) @ H.T"
    assert main(["check", "h.T @ delta2", "--wrt", "nothing"]) == 2
    assert capsys.readouterr().err.startswith("elman: error: --wrt nothing")
    assert main(["check", "W1", "--wrt", "W1", "--model-file", "mlp", "--convention", "column"]) == 1
    assert capsys.readouterr().out.startswith("wrong\n")
