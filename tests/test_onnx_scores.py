"""elman export --onnx --scores: the scoring graph's log P of each target,
from onnxruntime, against elman's own per-token scores; a class softmax's
graph never holds U's V columns as one product."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from helpers import random_model
from elman import cli
from elman.core import direct as dc
from elman.core.classes import word_classes
from elman.data import Vocab
from elman.inference import onnx_scores
from elman.model import Params, window_losses
from elman.modelfile import load_params, save_checkpoint
from test_onnx_rnnlm import _model, _reference
from test_rnnlm_files import FIX, elman, unzipped

V, DH = 13, 7
SKEWED = np.array([400, 300, 40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30])    # one-word classes and wider ones


def _save(run_dir, classes=0, direct=0, dtype="float32", counts=None):
    p = random_model(V=V, d=5, Dh=DH, dtype=dtype, classes=classes, direct=direct)
    if counts is not None:          # other class bounds: the model's are its counts' binning
        p = Params.init(V, 5, DH, seed=5, dtype=dtype, classes=classes, counts=counts, direct=direct, direct_order=3)
        rng = np.random.default_rng(6)
        for a in p.as_dict().values():
            if a.dtype.kind == "f":
                a += rng.normal(scale=0.5, size=a.shape).astype(a.dtype)
    vocab = Vocab(["<eos>", "<unk>"] + [f"w{i}" for i in range(V - 2)], counts=np.arange(3 * V, 2 * V, -1))
    save_checkpoint(run_dir, p.as_dict(), vocab, {"level": "word"})
    return p


def _export(capsys, model, path, *more):
    rc = cli.main(["export", "--model", str(model), "--onnx", str(path), "--scores", *more])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(session, p, ids, targets, cuts, h0=None):
    """The graph's log_prob (B,T) in calls of columns cuts[i]:cuts[i+1], h and the history carried."""
    B = ids.shape[0]
    h = np.zeros((B, DH), np.float32) if h0 is None else h0
    hist, got = np.full((B, max(p.order - 2, 0)), -1, np.int64), []
    for a, b in zip(cuts[:-1], cuts[1:]):
        feeds = {"ids": ids[:, a:b], "targets": targets[:, a:b], "h0": h}
        if p.order:
            feeds["history"] = hist
        log_prob, h, *rest = session.run(None, feeds)
        assert log_prob.shape == (B, b - a) and log_prob.dtype == np.float32
        if p.order:
            hist = rest[0]
        got.append(log_prob)
    return np.concatenate(got, axis=1), h


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("classes, direct", [(0, 0), (4, 0), (0, 300), (4, 300)])
def test_log_prob_is_elmans_per_token_score_with_the_state_carried(tmp_path, capsys, classes, direct, dtype):
    p = _save(tmp_path / "m", classes=classes, direct=direct, dtype=dtype)
    rc, out, err = _export(capsys, tmp_path / "m", tmp_path / "lm.onnx")
    assert rc == 0 and "scoring graph" in out, err
    model = onnx.load(str(tmp_path / "lm.onnx"))
    assert [i.name for i in model.graph.input] == ["ids", "h0", "targets"] + (["history"] if direct else [])
    assert [o.name for o in model.graph.output] == ["log_prob", "h"] + (["next_history"] if direct else [])
    assert {m.key: m.value for m in model.metadata_props}["graph"] == "scores"
    rng = np.random.default_rng(classes + direct)
    B, T = 3, 13
    ids, targets = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    got, h = _run(_session(tmp_path / "lm.onnx"), p, ids, targets, [0, 5, 6, 13])
    steps = [(ids[:, a:b], targets[:, a:b]) for a, b in ((0, 5), (5, 6), (6, 13))]
    want = np.concatenate([w for w, _ in window_losses(p, iter(steps), np.zeros((B, DH), p.dtype))], axis=1)
    assert np.abs(got + want).max() < 2e-5
    # the state counts: carried, not restarted, from call to call
    restarted = np.concatenate([_run(_session(tmp_path / "lm.onnx"), p, ids[:, a:b], targets[:, a:b], [0, b - a])[0]
                                for a, b in ((0, 5), (5, 13))], axis=1)
    assert np.abs(restarted[:, 5:] + want[:, 5:]).max() > 1e-3


@pytest.mark.parametrize("direct", [0, 300])
def test_classes_no_target_hits_and_one_word_classes(tmp_path, capsys, direct):
    """Batches whose targets hit some classes only (one class, or none of a
    class's words) and one-word classes (log P(w|c,h) = 0) score right."""
    p = _save(tmp_path / "m", classes=5, direct=direct, counts=SKEWED)
    sizes = np.diff(p.class_bounds)
    assert (sizes == 1).any() and (sizes > 1).any()
    assert _export(capsys, tmp_path / "m", tmp_path / "lm.onnx")[0] == 0
    session, rng = _session(tmp_path / "lm.onnx"), np.random.default_rng(1)
    last = np.arange(p.class_bounds[-2], V)                       # the last class's words only
    for targets in (rng.choice(last, (2, 9)), rng.choice([0, 1, V - 1], (2, 9)), np.full((4, 1), V - 1)):
        hit = np.unique(word_classes(p.class_bounds, targets))
        assert len(hit) < p.classes
        ids = rng.integers(0, V, targets.shape)
        got = _run(session, p, ids, targets, [0, targets.shape[1]])[0]
        want = next(window_losses(p, iter([(ids, targets)]), np.zeros((len(ids), DH), p.dtype)))[0]
        assert np.abs(got + want).max() < 2e-5


def test_a_class_softmax_graph_has_no_product_over_the_vocabulary(tmp_path, capsys):
    p = _save(tmp_path / "m", classes=4, direct=300)
    assert _export(capsys, tmp_path / "m", tmp_path / "lm.onnx")[0] == 0
    graph = onnx.load(str(tmp_path / "lm.onnx")).graph
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    assert "U" not in shapes and not any(s[-1:] == (V,) and len(s) == 2 for s in shapes.values())
    parts = [s for name, s in shapes.items() if name.startswith("sc") and name.endswith("_U")]
    assert sum(s[1] for s in parts) == V and all(s[0] == DH for s in parts)
    ops = [n.op_type for n in graph.node]
    assert "RNN" not in ops and ops.count("NonZero") == 4
    steps = next(n for n in graph.node if n.op_type == "If")
    assert [n.op_type for a in steps.attribute if a.name == "then_branch" for n in a.g.node] == ["Scan"]


def test_the_recurrence_without_the_table_is_the_same(tmp_path, monkeypatch, capsys):
    """Above TABLE_BYTES the graph computes e I + b1 at each position in place of a table of every word."""
    p = _save(tmp_path / "m", classes=4)
    monkeypatch.setattr(onnx_scores, "TABLE_BYTES", 0)
    assert _export(capsys, tmp_path / "m", tmp_path / "lm.onnx")[0] == 0
    assert "LI" not in {i.name for i in onnx.load(str(tmp_path / "lm.onnx")).graph.initializer}
    rng = np.random.default_rng(2)
    ids, targets, h0 = rng.integers(0, V, (2, 6)), rng.integers(0, V, (2, 6)), rng.normal(size=(2, DH))
    got = _run(_session(tmp_path / "lm.onnx"), p, ids, targets, [0, 6], h0.astype(np.float32))[0]
    want = next(window_losses(p, iter([(ids, targets)]), h0.astype(np.float32)))[0]
    assert np.abs(got + want).max() < 2e-5


def test_elman_score_per_token_equals_the_graph(tmp_path, capsys):
    """A text scored as one stream in two calls: `elman score --carry --per-token`'s log10 P of each token."""
    _save(tmp_path / "m", classes=4, direct=300)
    assert _export(capsys, tmp_path / "m", tmp_path / "lm.onnx")[0] == 0
    rng = np.random.default_rng(3)
    lines = [" ".join(f"w{i}" for i in rng.integers(0, V - 2, rng.integers(1, 9))) for _ in range(12)]
    (tmp_path / "text.txt").write_text("\n".join(lines) + "\n")
    assert cli.main(["score", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "text.txt"), "--carry",
                     "--per-token", str(tmp_path / "tok")]) == 0
    capsys.readouterr()
    want = np.array([float(line.split("\t")[1]) for line in (tmp_path / "tok").read_text().splitlines()])
    p, vocab, _ = load_params(tmp_path / "m")
    stream = np.array([vocab.eos_id] + [i for ln in lines for i in [*vocab.encode(ln.split()), vocab.eos_id]])
    got = _run(_session(tmp_path / "lm.onnx"), p, stream[None, :-1], stream[None, 1:], [0, 20, len(stream) - 1])[0]
    assert len(want) == got.shape[1]
    np.testing.assert_allclose(got[0] / np.log(10), want, rtol=1e-6, atol=2e-6)


@pytest.mark.parametrize("order,K,M,oov", [(2, 3, 23, None), (3, 3, 23, None), (4, 4, 31, 5), (3, 3, 1001, 7),
                                           (4, 0, 24, 2)])
def test_rnnlm_hashing_scores(tmp_path, order, K, M, oov):
    """RNNLM's hashing (its stopping rules happen on these small tables): the
    graph's log P of each target is elman's, in calls with the history carried."""
    p = _model(10, K, M, order, seed=order + K + M, oov=oov)
    vocab = Vocab(["<eos>", "<unk>"] + [f"w{i}" for i in range(8)])
    cfg = {"level": "word", "direct_hash": "rnnlm", **({"direct_oov": oov} if oov is not None else {})}
    save_checkpoint(tmp_path / "m", p.as_dict(), vocab, cfg)
    elman("export", "--model", tmp_path / "m", "--onnx", tmp_path / "lm.onnx", "--scores")
    rng = np.random.default_rng(M)
    ids, targets = rng.integers(0, 10, (3, 16)), rng.integers(0, 10, (3, 16))
    if oov is not None:
        ids[:, 3::4] = oov
    session = ort.InferenceSession(str(tmp_path / "lm.onnx"), providers=["CPUExecutionProvider"])
    h, hist, got = np.zeros((3, 5), np.float32), np.full((3, max(order - 2, 0)), -1), []
    for a, b in ((0, 6), (6, 7), (7, 16)):
        log_prob, h, hist = session.run(None, {"ids": ids[:, a:b], "targets": targets[:, a:b], "h0": h, "history": hist})
        got.append(log_prob)
    want = np.take_along_axis(_reference(p, ids, None), targets[..., None], 2)[..., 0]
    assert np.abs(np.concatenate(got, axis=1) - want).max() < 2e-5


def test_an_rnnme_model_scores_as_elman_score(tmp_path):
    """The RNNME model Mikolov's binary wrote, imported: the scoring graph's
    log10 P of each token of the fixtures' text is `elman score --carry --per-token`'s."""
    elman("import", "--rnnlm", unzipped("rnnme-text.model", tmp_path), tmp_path / "m")
    p, vocab, _ = load_params(tmp_path / "m")
    elman("export", "--model", tmp_path / "m", "--onnx", tmp_path / "m.onnx", "--scores")
    elman("score", "--model", tmp_path / "m", "--data", FIX / "test.txt", "--carry", "--per-token", tmp_path / "tok")
    want = np.array([float(line.split("\t")[1]) for line in (tmp_path / "tok").read_text().splitlines()])
    lines = (FIX / "test.txt").read_text().splitlines()
    stream = np.array([vocab.eos_id] + [i for ln in lines for i in [*vocab.encode(ln.split()), vocab.eos_id]])
    meta = {m.key: m.value for m in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    h = np.array([json.loads(meta["h_start"])], np.float32)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x, y, hist, got = stream[None, :-1], stream[None, 1:], np.full((1, p.order - 2), -1), []
    for a, b in ((0, 700), (700, 701), (701, y.shape[1])):
        log_prob, h, hist = session.run(None, {"ids": x[:, a:b], "targets": y[:, a:b], "h0": h, "history": hist})
        got.append(log_prob[0])
    got = np.concatenate(got) / np.log(10)
    assert len(got) == len(want) == 1848
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-6)


def test_scores_with_rnnlm_output_is_refused_in_one_line(tmp_path, capsys):
    _save(tmp_path / "m", classes=4)
    rc = cli.main(["export", "--model", str(tmp_path / "m"), "--rnnlm", str(tmp_path / "out.model"), "--scores"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--scores" in err and "--onnx" in err, err
    assert not (tmp_path / "out.model").exists()
    # and the log_probs graph stays the default, its own inputs and outputs
    assert cli.main(["export", "--model", str(tmp_path / "m"), "--onnx", str(tmp_path / "lm.onnx")]) == 0
    graph = onnx.load(str(tmp_path / "lm.onnx")).graph
    assert [i.name for i in graph.input] == ["ids", "h0"] and [o.name for o in graph.output] == ["log_probs", "h"]
    assert "RNN" in {n.op_type for n in graph.node}


@pytest.mark.parametrize("classes, direct, rnnlm", [(0, 0, False), (4, 300, False), (3, 1001, True)])
def test_a_call_of_no_steps_or_no_rows_keeps_the_state(tmp_path, capsys, classes, direct, rnnlm):
    """T = 0 or B = 0: empty log_prob, h = h0 and next_history = history (not
    a crash: onnxruntime's Scan stops the process on an empty input)."""
    p = _model(10, classes, direct, 3, seed=1, oov=None) if rnnlm else _save(tmp_path / "m", classes, direct)
    if rnnlm:
        save_checkpoint(tmp_path / "m", p.as_dict(), Vocab(["<eos>", "<unk>"] + [f"w{i}" for i in range(8)]),
                        {"level": "word", "direct_hash": "rnnlm"})
    assert _export(capsys, tmp_path / "m", tmp_path / "lm.onnx")[0] == 0
    session, rng = _session(tmp_path / "lm.onnx"), np.random.default_rng(4)
    for B, T in ((2, 0), (0, 3)):
        h0 = rng.normal(size=(B, p.Dh)).astype(np.float32)
        feeds = {"ids": np.zeros((B, T), np.int64), "targets": np.zeros((B, T), np.int64), "h0": h0}
        if p.order:
            feeds["history"] = rng.integers(0, 8, (B, 1))
        log_prob, h, *rest = session.run(None, feeds)
        assert log_prob.shape == (B, T) and np.array_equal(h, h0)
        if p.order:
            assert np.array_equal(rest[0], feeds["history"])


def test_the_benchmark_runs_and_one_stream_is_elman_evals_perplexity(tmp_path, capsys):
    """bench/onnx_scoring.py on a small model: its JSON lines, and with one part the text's perplexity is eval's."""
    import re
    import subprocess
    import sys
    from pathlib import Path
    _save(tmp_path / "m", classes=4, direct=300)
    rng = np.random.default_rng(5)
    (tmp_path / "t.txt").write_text("".join(" ".join(f"w{i}" for i in rng.integers(0, V - 2, 6)) + "\n"
                                            for _ in range(20)))
    bench = Path(__file__).parent.parent / "bench" / "onnx_scoring.py"
    done = subprocess.run([sys.executable, str(bench), "--model", str(tmp_path / "m"), "--data", str(tmp_path / "t.txt"),
                           "--out", str(tmp_path / "out"), "--streams", "1", "--steps", "16", "--threads", "1",
                           "--log-probs-tokens", "64"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["graph"] for r in rows] == ["scores", "log_probs"] and rows[0]["tokens"] == 140
    assert rows[1]["max_abs_diff_vs_scores"] < 1e-5
    assert cli.main(["eval", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "t.txt")]) == 0
    ppl = float(re.search(r"perplexity ([\d.]+)", capsys.readouterr().out).group(1))
    assert rows[0]["ppl"] == pytest.approx(ppl, abs=2e-3)
