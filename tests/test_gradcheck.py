"""`elman gradcheck`: the table, the exit status, and that it can fail."""
import subprocess
import sys

import numpy as np
import pytest

from elman.cli import main
from elman.model import gradcheck as gc


def test_gradcheck_passes_and_prints_table(capsys):
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    for name in ["L", "I", "H", "U", "b1", "b2"]:
        assert any(line.split()[:1] == [name] and line.endswith("pass") for line in out.splitlines())
    assert "6/6 pass" in out


def test_gradcheck_step_checks_eight_quantities(capsys):
    assert main(["gradcheck", "--step", "--V", "5", "--d", "2", "--Dh", "3", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert "8/8 pass" in out and "h_prev" in out and "L_x" in out


def test_gradcheck_fails_on_a_wrong_gradient(monkeypatch, capsys):
    real = gc.bptt

    def wrong(p, inputs, targets, h0):
        loss, grads, h = real(p, inputs, targets, h0)
        return loss, dict(grads, H=np.transpose(grads["H"])), h

    monkeypatch.setattr(gc, "bptt", wrong)
    # the finite differences call the same (patched) function, whose loss is right
    assert main(["gradcheck"]) == 1
    out = capsys.readouterr().out
    assert "H " in out and "FAIL" in out and "5/6 pass" in out


@pytest.mark.parametrize("argv", [["gradcheck", "--V", "1"], ["gradcheck", "--d", "0"], ["gradcheck", "--T", "x"]])
def test_gradcheck_bad_sizes(argv, capsys):
    with pytest.raises(SystemExit) if argv[2] != "1" else _noraise():
        rc = main(argv)
        assert rc == 2
    err = capsys.readouterr().err
    assert err.strip() and "Traceback" not in err


class _noraise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "elman", "gradcheck", "--step"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "8/8 pass" in r.stdout
