"""elman export --onnx: onnxruntime's log-probabilities against elman's,
with and without direct connections (whose hash the graph computes)."""
import json
import os
import sys

import numpy as np
import onnx                     # the export extra: make test installs it, so these tests always run
import onnxruntime as ort
import pytest

from helpers import random_model
from elman import cli
from elman.core import direct as dc
from elman.model import Params, output_probs, rnn_step, window_losses
from elman.inference import onnx_direct
from elman.data import Vocab
from elman.modelfile import save_checkpoint

V = 13


def _save(run_dir, classes=0, extra=None, direct=0, order=3):
    p = random_model(V=V, d=5, Dh=7, dtype="float32", classes=classes, direct=direct)
    if direct and order != 3:
        p = Params.from_dict({**p.as_dict(), "direct_order": np.array([order])})
    vocab = Vocab(["<eos>", "<unk>"] + [f"w{i}" for i in range(V - 2)], counts=np.arange(3 * V, 2 * V, -1))
    save_checkpoint(run_dir, {**p.as_dict(), **(extra or {})}, vocab, {"level": "word"})
    return p


def _export(capsys, model, onnx_path):
    rc = cli.main(["export", "--model", str(model), "--onnx", str(onnx_path)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _reference(p, ids, h0, history=None):
    """elman's log P over the vocabulary at each step (B,T,V) and the last state, float64;
    with direct connections, each step's context is ``history`` then the ids read so far."""
    h, out = h0.astype(np.float64), []
    p64 = p.astype("float64")
    ctx = dc.contexts(ids, history, p.order) if p.order else None
    for t in range(ids.shape[1]):
        h = rnn_step(p64, ids[:, t], h)
        out.append(np.log(output_probs(p64, h, None if ctx is None else ctx[:, t:t + p.order - 1])))
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
    # without direct connections: the graph of before, at opset 17
    assert [i.name for i in graph.input] == ["ids", "h0"] and [o.name for o in graph.output] == ["log_probs", "h"]
    assert [o.version for o in onnx.load(str(tmp_path / "lm.onnx")).opset_import] == [17]
    assert "direct_order" not in meta and not any("direct" in n.name for n in graph.initializer)


@pytest.mark.parametrize("direct, extra, needle", [
    (40, {"hs_nodes": np.zeros((V, 4), np.float32)}, "hs_nodes"),   # with direct connections too
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


# ---------------------------------------------------------------- direct connections


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("order", [3, 4])
@pytest.mark.parametrize("classes", [0, 4])
def test_direct_connections_give_elmans_log_probabilities_with_the_history_carried(tmp_path, capsys, order, classes):
    p = _save(tmp_path / "m", classes=classes, direct=300, order=order)
    rc, out, err = _export(capsys, tmp_path / "m", tmp_path / "lm.onnx")
    assert rc == 0 and f"direct connections of order {order}" in out, err
    model = onnx.load(str(tmp_path / "lm.onnx"))
    assert [i.name for i in model.graph.input] == ["ids", "h0", "history"]
    assert [o.name for o in model.graph.output] == ["log_probs", "h", "next_history"]
    assert [o.version for o in model.opset_import] == [18]
    meta = {m.key: m.value for m in model.metadata_props}
    assert (meta["direct_order"], meta["direct_size"], meta["history_size"]) == (str(order), "300", str(order - 2))
    session = _session(tmp_path / "lm.onnx")
    rng = np.random.default_rng(order + classes)
    B = 3
    # a text from its start (history all -1), in calls of 5, 1 and 7 steps, h and the history carried
    ids = rng.integers(0, V, (B, 13))
    h, hist, got = np.zeros((B, 7), np.float32), np.full((B, order - 2), -1, np.int64), []
    for a, b in ((0, 5), (5, 6), (6, 13)):
        log_probs, h, hist = session.run(None, {"ids": ids[:, a:b], "h0": h, "history": hist})
        assert log_probs.shape == (B, b - a, V) and hist.dtype == np.int64
        assert np.array_equal(hist, ids[:, b - order + 2:b])
        got.append(log_probs)
    got = np.concatenate(got, axis=1)
    want, h_want = _reference(p, ids, np.zeros((B, 7)))
    assert np.abs(got - want).max() < 1e-5
    assert np.abs(h - h_want).max() < 1e-5
    np.testing.assert_allclose(np.exp(got).sum(axis=2), 1.0, atol=1e-5)
    # the direct terms and the history count: without them the numbers are another model's
    plain = Params.from_dict({k: v for k, v in p.as_dict().items() if k not in ("D", "direct_order")})
    assert np.abs(_reference(plain, ids, np.zeros((B, 7)))[0] - want).max() > 0.1
    # a window in the middle of a text: the history given
    history = rng.integers(0, V, (B, order - 2))
    h0 = rng.normal(size=(B, 7)).astype(np.float32)
    log_probs, _, hist = session.run(None, {"ids": ids[:, :4], "h0": h0, "history": history})
    want = _reference(p, ids[:, :4], h0, history)[0]
    assert np.abs(log_probs - want).max() < 1e-5
    assert np.abs(_reference(p, ids[:, :4], h0)[0][:, :order - 2] - want[:, :order - 2]).max() > 0.01
    assert np.array_equal(hist, dc.next_history(dc.contexts(ids[:, :4], history, order), order))
    # elman's per-token log-probabilities of a text in two windows, as eval computes them
    text = rng.integers(1, V, 30)
    x = np.r_[0, text[:-1]][None]
    windows = [(x[:, :12], text[None, :12]), (x[:, 12:], text[None, 12:])]
    losses = np.concatenate([w for w, _ in window_losses(p, windows, np.zeros((1, 7), np.float32))], axis=1)
    h, hist, per_token = np.zeros((1, 7), np.float32), np.full((1, order - 2), -1, np.int64), []
    for xs, ys in windows:
        log_probs, h, hist = session.run(None, {"ids": xs, "h0": h, "history": hist})
        per_token.append(log_probs[0, np.arange(ys.shape[1]), ys[0]])
    assert np.abs(np.concatenate(per_token) + losses[0]).max() < 1e-5


@pytest.mark.parametrize("order", [2, 3, 5])
def test_the_graphs_offsets_are_elmans_hash_bit_for_bit(tmp_path, capsys, order):
    """The offsets the graph computes, read from it, for ids near 2^31 (and
    beyond): every uint64 step wraps as elman's does."""
    M, K = 100_003, 4
    _save(tmp_path / "m", classes=K, direct=M, order=order)
    assert _export(capsys, tmp_path / "m", tmp_path / "lm.onnx")[0] == 0
    names = [onnx_direct.offset_name(salt, k) for salt in (dc.WORDS, dc.CLASSES) for k in range(1, order)]
    shaped = onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / "lm.onnx")))     # value infos to extract by
    part = onnx.utils.Extractor(shaped).extract_model(["ids", "history"], names)
    session = ort.InferenceSession(part.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(order)
    B, T = 4, 6
    ids = rng.integers(2**31 - 50, 2**31 + 50, (B, T))
    ids[0, :2] = [0, 2**40 + 7]
    history = rng.integers(2**31 - 50, 2**31 + 50, (B, order - 2))
    history[1:3] = -1                                 # none: the start of a text
    got = dict(zip(names, session.run(names, {"ids": ids, "history": history})))
    ctx = dc.contexts(ids, history, order)
    for salt, span in ((dc.WORDS, M - V + 1), (dc.CLASSES, M - K + 1)):
        want = dc.offsets(ctx, order, span, salt).reshape(T, B, order - 1)
        for k in range(1, order):
            o = got[onnx_direct.offset_name(salt, k)]
            assert o.dtype == np.int64 and o.shape == (B, T)
            assert np.array_equal(o, want[:, :, k - 1].T), (salt, k)
    assert len(np.unique(want)) > want.size // 2       # real offsets, not a constant
