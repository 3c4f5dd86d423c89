"""elman export --onnx: onnxruntime's log-probabilities against elman's."""
import json
import os
import sys

import numpy as np
import onnx                     # the export extra: make test installs it, so these tests always run
import onnxruntime as ort
import pytest

from helpers import random_model
from elman import cli
from elman.core.model import output_probs, rnn_step, window_losses
from elman.data import Vocab
from elman.modelfile import save_checkpoint

V = 13


def _save(run_dir, classes=0, extra=None, direct=0):
    p = random_model(V=V, d=5, Dh=7, dtype="float32", classes=classes, direct=direct)
    vocab = Vocab(["<eos>", "<unk>"] + [f"w{i}" for i in range(V - 2)], counts=np.arange(3 * V, 2 * V, -1))
    save_checkpoint(run_dir, {**p.as_dict(), **(extra or {})}, vocab, {"level": "word"})
    return p


def _export(capsys, model, onnx_path):
    rc = cli.main(["export", "--model", str(model), "--onnx", str(onnx_path)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _reference(p, ids, h0):
    """elman's log P over the vocabulary at each step (B,T,V) and the last state, float64."""
    h, out = h0.astype(np.float64), []
    p64 = p.astype("float64")
    for t in range(ids.shape[1]):
        h = rnn_step(p64, ids[:, t], h)
        out.append(np.log(output_probs(p64, h)))
    return np.stack(out, axis=1), h


@pytest.mark.parametrize("classes", [0, 4])
def test_onnxruntime_gives_elmans_log_probabilities(tmp_path, capsys, classes):
    p = _save(tmp_path / "m", classes=classes)
    rc, out, err = _export(capsys, tmp_path / "m", tmp_path / "lm.onnx")
    assert rc == 0, err
    session = ort.InferenceSession(str(tmp_path / "lm.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for B, T in ((1, 1), (3, 17), (2, 40)):              # batch and time are dynamic
        ids = rng.integers(0, V, (B, T))
        h0 = rng.normal(size=(B, 7)).astype(np.float32)
        log_probs, h = session.run(["log_probs", "h"], {"ids": ids, "h0": h0})
        want, h_want = _reference(p, ids, h0)
        assert log_probs.shape == (B, T, V) and log_probs.dtype == np.float32
        assert np.abs(log_probs - want).max() < 1e-4
        assert np.abs(h - h_want).max() < 1e-5
        np.testing.assert_allclose(np.exp(log_probs).sum(axis=2), 1.0, atol=1e-5)    # normalised
    # elman's per-token log-probabilities of a text, as eval computes them (h0 = 0 after <eos>)
    text = rng.integers(1, V, 30)
    x = np.r_[0, text[:-1]][None]
    losses, _ = next(window_losses(p, [(x, text[None])], np.zeros((1, 7), np.float32)))
    log_probs, _ = session.run(["log_probs", "h"], {"ids": x, "h0": np.zeros((1, 7), np.float32)})
    per_token = log_probs[0, np.arange(30), text]
    assert np.abs(per_token + losses[0]).max() < 1e-4


def test_the_vocabulary_travels_beside_it_with_the_special_ids_in_the_metadata(tmp_path, capsys):
    _save(tmp_path / "m")
    assert _export(capsys, tmp_path / "m", tmp_path / "lm.onnx")[0] == 0
    meta = {m.key: m.value for m in onnx.load(str(tmp_path / "lm.onnx")).metadata_props}
    vocab = (tmp_path / "vocab.txt").read_text().split("\n")[:-1]
    assert vocab == (tmp_path / "m" / "vocab.txt").read_text().split("\n")[:-1]
    assert vocab[int(meta["eos_id"])] == "<eos>" and vocab[int(meta["unk_id"])] == "<unk>"
    assert int(meta["vocab_size"]) == V and meta["vocab_file"] == "vocab.txt"
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "lm.onnx").stat().st_mode & 0o777 == 0o666 & ~umask    # a file to deploy, not a private one
    graph = onnx.load(str(tmp_path / "lm.onnx")).graph
    assert {n.op_type for n in graph.node} >= {"Gather", "RNN", "MatMul", "LogSoftmax"}
    rnn = next(n for n in graph.node if n.op_type == "RNN")
    assert [a.strings for a in rnn.attribute if a.name == "activations"] == [[b"Sigmoid"]]


@pytest.mark.parametrize("direct, extra, needle", [
    (40, None, "D, direct_order"),                            # direct connections (issue 13's tensors)
    (0, {"hs_nodes": np.zeros((V, 4), np.float32)}, "hs_nodes"),   # any tensor the graph does not know
])
def test_parts_the_graph_cannot_express_are_refused_in_one_line(tmp_path, capsys, direct, extra, needle):
    _save(tmp_path / "m", direct=direct, extra=extra)
    rc, out, err = _export(capsys, tmp_path / "m", tmp_path / "lm.onnx")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and needle in err and "not exported" in err, err
    assert not (tmp_path / "lm.onnx").exists() and not (tmp_path / "vocab.txt").exists()


def test_export_bad_paths_and_missing_package(tmp_path, capsys, monkeypatch):
    _save(tmp_path / "m")
    rc, _, err = _export(capsys, tmp_path / "m", tmp_path / "lm.bin")
    assert rc == 2 and ".onnx" in err
    rc, _, err = _export(capsys, tmp_path / "m", tmp_path / "nowhere" / "lm.onnx")
    assert rc == 2 and "no such directory" in err
    monkeypatch.setitem(sys.modules, "onnx", None)
    rc, _, err = _export(capsys, tmp_path / "m", tmp_path / "lm.onnx")
    assert rc == 2 and "pip install 'elman[export]'" in err and len(err.strip().splitlines()) == 1
    assert json.loads((tmp_path / "m" / "config.json").read_text())["V"] == V
