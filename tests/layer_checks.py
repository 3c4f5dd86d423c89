"""The checks every registered output layer passes (``elman.model.outputs``):
its fast form against its reference form, its reference gradients against
float64 central differences, its log-probabilities against its losses, the
direct connections' gradient through its ``deltas``, the model's ``bptt``
through it, and its ONNX nodes against its log-probabilities."""
from __future__ import annotations

import numpy as np

from elman.core import direct as dc
from elman.core.sparse import densify
from elman.fast.direct import Features
from elman.model import Params, bptt
from elman.model.gradcheck import central_difference, max_rel_error
from elman.model.outputs import LAYERS

V, d, Dh, N, K = 13, 4, 5, 9, 3


def instance(name: str, direct: bool, seed: int = 0):
    """(reference layer, fast layer, p, h, y, Features or None), float64, every tensor random."""
    entry = LAYERS[name]
    rng = np.random.default_rng(seed)
    counts = np.sort(rng.integers(1, 50, V))[::-1]
    p = Params.init(V, d, Dh, seed=seed, dtype="float64", classes=K if "Uc" in entry.reference.tensors else 0,
                    counts=counts, direct=200 if direct else 0, direct_order=3)
    for name_, arr in p.as_dict().items():
        if arr.dtype.kind == "f":
            arr[...] = rng.normal(0.0, 0.5, arr.shape)
    ref = entry.reference.example(p, np.random.default_rng(seed + 1))
    fast = entry.fast.example(p, np.random.default_rng(seed + 1))
    h = rng.uniform(0.0, 1.0, (N, Dh))
    y = rng.integers(0, V, N)
    feats = None
    if direct:
        ctx = dc.contexts(rng.integers(0, V, (1, N)), None, 3)
        feats = Features(p.D, 3, V, p.classes, ctx)
    return ref, fast, p, h, y, feats


def _dense(grads):
    return {k: np.asarray(v) for k, v in densify(dict(grads)).items()}


def check_fast_matches_reference(name: str, direct: bool) -> None:
    ref, fast, p, h, y, feats = instance(name, direct)
    weights = np.random.default_rng(5).uniform(0.5, 1.5, N)
    r, f = ref.losses(p, h, y, direct=feats), fast.losses(p, h, y, direct=feats)
    np.testing.assert_allclose(f.losses, r.losses, rtol=1e-10)
    rb, fb = ref.backward(weights, r.cache), fast.backward(weights, f.cache)
    np.testing.assert_allclose(fb.dh, rb.dh, rtol=1e-9, atol=1e-12)
    rg, fg = _dense(rb.grads), _dense(fb.grads)
    assert sorted(rg) == sorted(fg)
    for k in rg:
        np.testing.assert_allclose(fg[k], rg[k], rtol=1e-9, atol=1e-12, err_msg=k)
    if feats is not None:
        dr = np.asarray(densify({"D": feats.grad(ref.deltas(weights, r.cache), False)})["D"])
        df = np.asarray(densify({"D": feats.grad(fast.deltas(weights, f.cache), False)})["D"])
        assert np.abs(dr).max() > 0
        np.testing.assert_allclose(df, dr, rtol=1e-9, atol=1e-12)


def check_reference_gradients(name: str, direct: bool) -> None:
    """Every gradient of Σ_n w_n J_n, h's and each tensor's (and D's through
    ``deltas``), against central differences of the reference losses."""
    ref, _, p, h, y, feats = instance(name, direct, seed=3)
    w = np.random.default_rng(7).uniform(0.5, 1.5, N)

    def loss():
        return float(w @ ref.losses(p, h, y, direct=feats).losses)

    fwd = ref.losses(p, h, y, direct=feats)
    b = ref.backward(w, fwd.cache)
    assert max_rel_error(b.dh, central_difference(loss, h)) < 1e-7
    for k, g in _dense(b.grads).items():
        assert max_rel_error(g, central_difference(loss, getattr(p, k))) < 1e-7, k
    if feats is not None:
        dD = np.asarray(densify({"D": feats.grad(ref.deltas(w, fwd.cache), False)})["D"])
        assert max_rel_error(dD, central_difference(loss, p.D)) < 1e-7


def check_log_probs(name: str) -> None:
    """log_probs normalised over V, and for a model's own layer equal to -losses."""
    ref, fast, p, h, y, _ = instance(name, False)
    for layer in (ref, fast):
        lp = layer.log_probs(p, h)
        np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, rtol=1e-12)
        if not layer.training_only:
            np.testing.assert_allclose(-lp[np.arange(N), y], ref.losses(p, h, y).losses, rtol=1e-10)


def check_bptt_gradients(name: str) -> None:
    """The model's bptt through the layer: every gradient against central differences."""
    _, fast, p, _, _, _ = instance(name, True, seed=4)
    rng = np.random.default_rng(9)
    inputs, targets, h0 = rng.integers(0, V, (2, 3)), rng.integers(0, V, (2, 3)), rng.uniform(0, 1, (2, Dh))
    _, grads, _ = bptt(p, inputs, targets, h0, output=fast)

    def loss():
        return bptt(p, inputs, targets, h0, output=fast)[0]

    for k, g in grads.items():
        assert max_rel_error(np.asarray(g), central_difference(loss, getattr(p, k))) < 1e-6, k


def _onnx_layer(name: str, scores: bool) -> None:
    """The layer's ONNX nodes (``scores``: its scoring nodes, fed "hid" and
    "targets" too) run on its logits (those it forms densely) against its
    log-probabilities (of the targets)."""
    import pytest
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper
    ref, _, p, h, y, _ = instance(name, False)
    if ref.training_only:
        return
    p = p.astype("float32")
    sparse = ref.onnx_sparse(p) if scores else ()
    spaces = [s for s in ref.logit_spaces(p) if s.salt not in sparse]
    inits: dict = {}
    nodes = ref.onnx_score_nodes(p, inits, helper) if scores else ref.onnx_nodes(p, inits, helper)
    inputs = [helper.make_tensor_value_info(s.graph_name, TensorProto.FLOAT, [1, N, s.width]) for s in spaces]
    h32 = h.astype(np.float32)
    feed = {s.graph_name: (h32 @ getattr(p, s.weight) + getattr(p, s.bias))[None] for s in spaces}
    want = ref.log_probs(p, h32)
    if scores:
        inputs += [helper.make_tensor_value_info("hid", TensorProto.FLOAT, [1, N, Dh]),
                   helper.make_tensor_value_info("targets", TensorProto.INT64, [1, N])]
        feed.update(hid=h32[None], targets=y[None])
        want = want[np.arange(N), y]
    out = [helper.make_tensor_value_info("log_prob", TensorProto.FLOAT, [1, N]) if scores else
           helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, [1, N, V])]
    graph = helper.make_graph(nodes, "layer", inputs, out, [numpy_helper.from_array(a, k) for k, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18 if scores else 17)], ir_version=8)
    onnx.checker.check_model(model)
    got = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0][0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def check_onnx_nodes(name: str) -> None:
    """The layer's ONNX nodes, fed its logits, give its log-probabilities."""
    _onnx_layer(name, scores=False)


def check_onnx_score_nodes(name: str) -> None:
    """The layer's scoring nodes, fed its logits, "hid" and "targets", give the targets' log-probabilities."""
    _onnx_layer(name, scores=True)


def check_layer(name: str) -> None:
    """Every check, for the layer registered as ``name``."""
    for direct in (False, True):
        check_fast_matches_reference(name, direct)
        check_reference_gradients(name, direct)
    check_log_probs(name)
    check_bptt_gradients(name)
    check_onnx_nodes(name)
    check_onnx_score_nodes(name)
