"""elman export --onnx of models whose direct connections are hashed RNNLM's
way: the graph computes RNNLM's offsets (``onnx_rnnlm_direct``). Held to
elman's log-probabilities on small tables, where RNNLM's stopping rules
(a zero class offset, a word window cut at the table's end, a word out of
RNNLM's vocabulary in the history) happen, and on the RNNME models the real
binary wrote (fixtures/rnnlm), imported, against ``elman score``."""
import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from elman.core import direct as dc, rnnlm_direct as rd
from elman.data import Vocab
from elman.model import Params, output_log_probs, rnn_step
from elman.modelfile import load_params, save_checkpoint
from test_rnnlm_files import FIX, elman, unzipped, without_unk


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _model(V, K, M, order, seed, oov):
    rng = np.random.default_rng(seed)
    counts = np.sort(rng.integers(1, 1000, V))[::-1]
    p = Params.init(V, 4, 5, seed=seed, dtype="float32", classes=K, counts=counts, direct=M, direct_order=order)
    for arr in p.as_dict().values():
        if arr.dtype.kind == "f":
            arr[...] = rng.normal(0.0, 0.7, arr.shape)
    p.direct_hash, p.direct_oov = "rnnlm", oov
    return p


def _reference(p, ids, history):
    """elman's log P (B,T,V) of each step, float64, the context ``history`` then the ids read."""
    p64 = p.astype("float64")
    ctx = dc.contexts(ids, history, p.order)
    h, out = np.zeros((ids.shape[0], p.Dh)), []
    for t in range(ids.shape[1]):
        h = rnn_step(p64, ids[:, t], h)
        out.append(output_log_probs(p64, h, ctx[:, t:t + p.order - 1]))
    return np.stack(out, axis=1)


@pytest.mark.parametrize("order,K,M,oov", [(2, 3, 23, None), (3, 3, 23, None), (4, 4, 31, 5), (5, 0, 24, 2),
                                           (3, 0, 1001, None), (3, 3, 1001, 7)])
def test_the_graph_is_rnnlms_hashing(tmp_path, order, K, M, oov):
    """Every log-probability of the graph, in calls with the history carried,
    equals elman's; the stopping rules happened on these contexts."""
    V = 10
    p = _model(V, K, M, order, seed=order + K + M, oov=oov)
    vocab = Vocab(["<eos>", "<unk>"] + [f"w{i}" for i in range(V - 2)])
    cfg = {"level": "word", "direct_hash": "rnnlm", **({"direct_oov": oov} if oov is not None else {})}
    save_checkpoint(tmp_path / "m", p.as_dict(), vocab, cfg)
    assert load_params(tmp_path / "m")[0].direct_oov == oov
    elman("export", "--model", tmp_path / "m", "--onnx", tmp_path / "lm.onnx")
    meta = {m.key: m.value for m in onnx.load(str(tmp_path / "lm.onnx")).metadata_props}
    assert meta["direct_hash"] == "rnnlm"
    rng = np.random.default_rng(M)
    B, n = 3, max(order - 2, 0)
    ids = rng.integers(0, V, (B, 16))
    if oov is not None:
        ids[:, 3::4] = oov
    session, h, hist, got = _session(tmp_path / "lm.onnx"), np.zeros((B, 5), np.float32), np.full((B, n), -1), []
    for a, b in ((0, 6), (6, 7), (7, 16)):
        log_probs, h, hist = session.run(None, {"ids": ids[:, a:b], "h0": h, "history": hist})
        got.append(log_probs)
    want = _reference(p, ids, None)
    assert np.abs(np.concatenate(got, axis=1) - want).max() < 2e-5
    ctx = dc.contexts(ids, None, order)
    S, alive = rd.sums(ctx, order), rd.live(ctx, order, oov)
    if M < 100:
        bounds = p.class_bounds if K else np.array([0, V])
        cut = [(rd.word_offsets(S, M, k, alive)[1] < bounds[k + 1] - bounds[k]).any() for k in range(len(bounds) - 1)]
        assert any(cut)
    if oov is not None:
        assert not alive.all()
        p.direct_oov = None                                      # the rule moves the numbers
        assert np.abs(_reference(p, ids, None) - want).max() > 1e-3


@pytest.mark.parametrize("source", ["rnnme-text.model", "rnnme-binary.model", "elman-rnnme", "without <unk>"])
def test_rnnme_models_in_onnx_give_elman_scores(tmp_path, source):
    """The RNNME models the binary wrote, imported (and elman's own, trained
    with --direct-hash rnnlm), exported to ONNX: onnxruntime's log10 P of
    each token of the fixtures' test text, run as one stream in three calls
    from the metadata's h_start (an import's: the state the file saved),
    is ``elman score --carry --per-token``'s, to float32 rounding."""
    if source == "elman-rnnme":
        model = FIX / "elman-rnnme"
    else:
        path = without_unk(tmp_path) if source == "without <unk>" else unzipped(source, tmp_path)
        model = tmp_path / "m"
        elman("import", "--rnnlm", path, model)
    p, vocab, cfg = load_params(model)
    assert p.direct_hash == "rnnlm" and (p.direct_oov is not None) == (source == "without <unk>")
    elman("export", "--model", model, "--onnx", tmp_path / "m.onnx")
    elman("score", "--model", model, "--data", FIX / "test.txt", "--carry", "--per-token", tmp_path / "tok")
    want = np.array([float(line.split("\t")[1]) for line in (tmp_path / "tok").read_text().splitlines()])
    lines = (FIX / "test.txt").read_text().splitlines()
    stream = np.array([vocab.eos_id] + [i for ln in lines for i in [*vocab.encode(ln.split()), vocab.eos_id]])
    x, y = stream[None, :-1], stream[1:]
    session, got = _session(tmp_path / "m.onnx"), []
    meta = {m.key: m.value for m in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert ("h_start" in meta) == (source != "elman-rnnme")
    h = np.array([json.loads(meta.get("h_start", "[0]"))], np.float32) * np.ones((1, p.Dh), np.float32)
    hist = np.full((1, p.order - 2), -1)
    for a, b in ((0, 700), (700, 701), (701, len(y))):
        log_probs, h, hist = session.run(None, {"ids": x[:, a:b], "h0": h, "history": hist})
        got.append(log_probs[0, np.arange(b - a), y[a:b]])
    got = np.concatenate(got) / np.log(10)
    assert len(got) == len(want) == 1848
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-6)
    if source == "without <unk>":
        assert (y == p.direct_oov).sum() > 100
    ppl = float(re.search(r"perplexity ([\d.]+)", elman("eval", "--model", model, "--data", FIX / "test.txt")).group(1))
    assert 10 ** -got.mean() == pytest.approx(ppl, rel=2e-4)
