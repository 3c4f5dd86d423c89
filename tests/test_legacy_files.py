"""Model files of the first format, "elman-1", still load, evaluate and resume.

``fixtures/elman-1-run`` was written by an elman that wrote that format
(one package, the training settings under their first names), with

    train("run", dict(train="train.txt", valid="valid.txt", epochs=2, hidden=5, embed=4,
                      batch=2, bptt=3, checkpoint_every=3))

on ``helpers.write_corpus(".", lines=60)``. The figures below were computed
by that same code: its ``elman eval`` of the model, and the sha256 of every
tensor of a 3-epoch run made from scratch.
"""
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from elman import modelfile
from elman.cli import main
from elman.training.train import train
from helpers import on_fixture_kernels, write_corpus

FIXTURE = Path(__file__).parent / "fixtures" / "elman-1-run"
OLD_EVAL_PPL = 4.688151099471555
OLD_3_EPOCHS = {"b2": "4c91aab7a7097cf0", "U": "1787ef3c168ee8de", "b1": "e72a64c9ae224904",
                "I": "71b0c7a5cd551c1f", "L": "dd86edd6af459336", "H": "6d810604e60eaf5f"}


@pytest.fixture
def old_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_corpus(tmp_path, lines=60)
    shutil.copytree(FIXTURE, tmp_path / "run")
    return tmp_path / "run"


def test_the_fixture_uses_the_old_names(old_run):
    settings = json.loads((old_run / "last" / "config.json").read_text())["settings"]
    assert settings["batch"] == 2 and settings["bptt"] == 3 and "streams" not in settings


@on_fixture_kernels
def test_an_old_model_evaluates_to_the_same_digits(old_run, capsys):
    assert main(["eval", "--model", str(old_run), "--data", "valid.txt", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["perplexity"] == OLD_EVAL_PPL


def test_an_old_run_resumes_to_the_old_codes_weights(old_run):
    summary = train(old_run, {"epochs": 3}, resume=True, quiet=True)
    assert summary["epochs_done"] == 3
    arrays = modelfile.load_model(old_run, "last")[0]
    got = {k: hashlib.sha256(v.tobytes()).hexdigest()[:16] for k, v in arrays.items()}
    assert got == OLD_3_EPOCHS
