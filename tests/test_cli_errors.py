"""Bad input: one line naming the problem (and the file), a non-zero exit, no traceback."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from elman import cli
from elman.training.train import train

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _one_error_line(capsys, rc, *needles):
    err = capsys.readouterr().err
    assert rc != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    # Before it, at most the lines saying where token ids came from (the cache).
    assert lines and all(line.startswith("elman: token ids of ") for line in lines[:-1]), err
    for needle in needles:
        assert str(needle) in lines[-1], lines[-1]
    return lines[-1]


def _main(argv):
    """cli.main, with argparse's usage errors (SystemExit) turned into a return code."""
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code


@pytest.fixture
def corpus(tmp_path):
    text = "\n".join("the king saw the man and the man saw the king ." for _ in range(60)) + "\n"
    (tmp_path / "train.txt").write_text(text)
    (tmp_path / "valid.txt").write_text(text[:400])
    return tmp_path


def _train_args(c, **over):
    args = {"--train": c / "train.txt", "--valid": c / "valid.txt", "--out": c / "m", "--hidden": 4,
            "--embed": 4, "--batch": 2, "--bptt": 4, "--epochs": 1}
    args.update(over)
    return ["train", "--quiet"] + [x for k, v in args.items() if v is not None for x in (k, v)]


@pytest.fixture
def model(corpus):
    train(corpus / "m", dict(train=str(corpus / "train.txt"), valid=str(corpus / "valid.txt"), hidden=4,
                             embed=4, streams=2, steps=4, epochs=1), quiet=True)
    return corpus / "m"


# -- training input -----------------------------------------------------------------------

def test_missing_training_file(corpus, capsys):
    rc = _main(_train_args(corpus, **{"--train": corpus / "nope.txt"}))
    _one_error_line(capsys, rc, "nope.txt", "no such file")


def test_directory_where_a_file_belongs(corpus, capsys):
    (corpus / "adir").mkdir()
    rc = _main(_train_args(corpus, **{"--valid": corpus / "adir"}))
    _one_error_line(capsys, rc, "adir", "directory")


@pytest.mark.parametrize("content", ["", "   \n\t\n  \n"])
def test_empty_or_whitespace_only_file(corpus, capsys, content):
    (corpus / "empty.txt").write_text(content)
    rc = _main(_train_args(corpus, **{"--valid": corpus / "empty.txt"}))
    _one_error_line(capsys, rc, "empty.txt", "empty")


def test_undecodable_bytes(corpus, capsys):
    (corpus / "bad.txt").write_bytes(b"the king\nsaw \xff\xfe the man\n" * 40)
    rc = _main(_train_args(corpus, **{"--train": corpus / "bad.txt"}))
    _one_error_line(capsys, rc, "bad.txt", "offset 13", "--encoding")


def test_too_little_text_for_one_batch_says_how_much_is_needed(corpus, capsys):
    (corpus / "short.txt").write_text("a b c\n")
    rc = _main(_train_args(corpus, **{"--train": corpus / "short.txt", "--batch": 4, "--bptt": 5}))
    _one_error_line(capsys, rc, "short.txt", "need at least", "24 tokens", "has 4")


def test_a_vocabulary_under_two_tokens(corpus, capsys):
    rc = _main(_train_args(corpus, **{"--max-vocab": 1}))
    _one_error_line(capsys, rc, "at least 2")


@pytest.mark.parametrize("flag,value", [("--hidden", 0), ("--embed", -3), ("--batch", 0), ("--bptt", 0),
                                        ("--epochs", 0), ("--lr", 0), ("--lr", -0.1), ("--lr", "nan"),
                                        ("--clip", -1), ("--max-vocab", 0), ("--direct", -1),
                                        ("--direct", "inf"), ("--direct-order", 1), ("--direct-order", 21),
                                        ("--direct-order", "x"), ("--anneal", -1), ("--direct-lr", 0)])
def test_non_positive_sizes_and_rates(corpus, capsys, flag, value):
    rc = _main(_train_args(corpus, **{flag: value}))
    _one_error_line(capsys, rc, flag)


def test_direct_connections_too_small_or_without_a_size(corpus, capsys):
    rc = _main(_train_args(corpus, **{"--direct": 0.000001}))
    _one_error_line(capsys, rc, "--direct 1e-06 is 1 weights", "words of the vocabulary")
    rc = _main(_train_args(corpus, **{"--direct-order": 4, "--direct": 0}))
    _one_error_line(capsys, rc, "--direct-order", "--direct SIZE")
    rc = _main(_train_args(corpus, **{"--direct-lr": 0.5, "--direct": 0}))
    _one_error_line(capsys, rc, "--direct-lr", "--direct SIZE")


def test_an_unwritable_output(corpus, capsys):
    (corpus / "afile").write_text("x")
    rc = _main(_train_args(corpus, **{"--out": corpus / "afile" / "m"}))
    _one_error_line(capsys, rc, "afile")


def test_output_that_is_a_file(corpus, capsys):
    (corpus / "afile").write_text("x")
    rc = _main(_train_args(corpus, **{"--out": corpus / "afile"}))
    _one_error_line(capsys, rc, "afile", "not a directory")


def test_resume_without_a_run(corpus, capsys):
    rc = _main(["train", "--out", corpus / "nothing", "--resume"])
    _one_error_line(capsys, rc, "nothing", "no training state")


def test_train_without_train_file(corpus, capsys):
    rc = _main(["train", "--out", corpus / "m"])
    _one_error_line(capsys, rc, "--train")


# -- model input --------------------------------------------------------------------------

def test_missing_model(corpus, capsys):
    rc = _main(["eval", "--model", corpus / "nomodel", "--data", corpus / "valid.txt"])
    _one_error_line(capsys, rc, "nomodel")


def test_a_directory_that_is_not_a_model(corpus, capsys):
    (corpus / "junk").mkdir()
    (corpus / "junk" / "notes.txt").write_text("hello")
    rc = _main(["generate", "--model", corpus / "junk"])
    _one_error_line(capsys, rc, "junk", "config.json")


def test_truncated_model_file(model, capsys):
    f = model / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    rc = _main(["eval", "--model", model, "--data", model.parent / "valid.txt"])
    _one_error_line(capsys, rc, "model.safetensors")


def test_foreign_model_file(model, capsys):
    (model / "model.safetensors").write_bytes(b"\x80\x04\x95 a pickle, never loaded")
    rc = _main(["score", "--model", model, "--data", model.parent / "valid.txt"])
    _one_error_line(capsys, rc, "model.safetensors", "not a safetensors file")


def test_config_and_weights_that_disagree(model, capsys):
    cfg = json.loads((model / "config.json").read_text())
    cfg["Dh"] += 1
    (model / "config.json").write_text(json.dumps(cfg))
    rc = _main(["generate", "--model", model])
    _one_error_line(capsys, rc, "shape")


def test_a_non_positive_temperature(model, capsys):
    for t in ("0", "-1"):
        rc = _main(["generate", "--model", model, "--temperature", t])
        _one_error_line(capsys, rc, "--temperature")


def test_eval_of_a_missing_or_empty_data_file(model, capsys):
    rc = _main(["eval", "--model", model, "--data", model.parent / "none.txt"])
    _one_error_line(capsys, rc, "none.txt")
    (model.parent / "blank.txt").write_text("\n \n")
    rc = _main(["score", "--model", model, "--data", model.parent / "blank.txt"])
    _one_error_line(capsys, rc, "blank.txt", "empty")


def test_plot_without_a_training_log(corpus, capsys):
    rc = _main(["plot", corpus])
    _one_error_line(capsys, rc, "metrics.jsonl")


# -- as a real process ---------------------------------------------------------------------

@pytest.mark.parametrize("argv,needle", [
    (["eval", "--model", "{d}/nomodel", "--data", "{d}/x.txt"], "nomodel"),
    (["train", "--train", "{d}/nope.txt", "--valid", "{d}/nope.txt", "--out", "{d}/m"], "nope.txt"),
    (["train", "--train", "{d}/nope.txt", "--out", "{d}/m", "--hidden", "-1"], "--hidden"),
])
def test_the_process_prints_one_line_and_exits_non_zero(tmp_path, argv, needle):
    env = dict(os.environ, PYTHONPATH=SRC)
    r = subprocess.run([sys.executable, "-m", "elman", *[a.format(d=tmp_path) for a in argv]],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr


# -- malformed model files and internal errors ---------------------------------------------

def _rewrite_config(path, edit):
    cfg = json.loads(path.read_text())
    path.write_text(edit(cfg))


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_deeply_nested_json_in_a_config_is_one_line(model, capsys, command):
    target = model / ("config.json" if command == "eval" else "last/config.json")
    target.write_text("[" * 200_000 + "]" * 200_000)
    argv = (["eval", "--model", model, "--data", model.parent / "valid.txt"] if command == "eval"
            else ["train", "--out", model, "--resume", "--quiet"])
    _one_error_line(capsys, _main(argv), "config.json", "nested too deeply")


@pytest.mark.parametrize("settings", [[1, 2], {"streams": 2, "no_such_setting": 1}, {"hidden": 4}])
def test_malformed_training_settings_on_resume_are_one_line(model, capsys, settings):
    _rewrite_config(model / "last" / "config.json", lambda c: json.dumps({**c, "settings": settings}))
    rc = _main(["train", "--out", model, "--resume", "--quiet"])
    _one_error_line(capsys, rc, "training state", "last")


def test_tensors_that_are_not_a_model_on_resume_are_one_line(model, capsys):
    from safetensors.numpy import load_file, save_file
    f = model / "last" / "model.safetensors"
    arrays = load_file(f)
    for partner in ("bc", "class_bounds"):    # the defaults' model has a class softmax: keep only Uc
        arrays.pop(partner, None)
    arrays["Uc"] = arrays["H"]                # a class tensor without its partners
    save_file(arrays, f)
    _rewrite_config(model / "last" / "config.json", lambda c: json.dumps({k: v for k, v in c.items() if k != "files"}))
    rc = _main(["train", "--out", model, "--resume", "--quiet"])
    _one_error_line(capsys, rc, "model.safetensors", "output layer but the tensors are Uc")


def test_an_internal_error_is_one_line_that_says_bug(model, capsys, monkeypatch):
    from elman.inference import evaluate

    def broken(*a, **k):
        raise ZeroDivisionError("a deliberate bug")

    monkeypatch.setattr(evaluate, "perplexity", broken)
    rc = _main(["eval", "--model", model, "--data", model.parent / "valid.txt"])
    line = _one_error_line(capsys, rc, "internal error", "bug", "ZeroDivisionError", "ELMAN_DEBUG=1")
    assert rc == cli.EXIT_BUG and "a deliberate bug" in line
    monkeypatch.setenv("ELMAN_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        _main(["eval", "--model", model, "--data", model.parent / "valid.txt"])


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8\n", b"[" * 100_000 + b"\n", b"[1, 2]\n",
                                     b'{"epoch": "one", "batch": 1, "batches": 2, "train_ppl": 3}\n'])
def test_a_malformed_metrics_log_is_one_line(model, capsys, content):
    pytest.importorskip("matplotlib")
    (model / "metrics.jsonl").write_bytes(content)
    _one_error_line(capsys, _main(["plot", model]), "metrics.jsonl")
