"""``elman export --onnx``: the model as an ONNX graph of ONNX's own
operators, built with onnx's helper API (``pip install 'elman[export]'``).

    ids (int64, [B, T]), h0 (float32, [B, Dh])
      e        = Gather(L, ids)                                [B, T, d]
      Y, Y_h   = RNN(e, W = Iᵀ, R = Hᵀ, B = [b1, 0], h0),      activation Sigmoid
                 i.e. h(t) = sigmoid(e(t) I + h(t-1) H + b1), elman's recurrence
      log_probs = LogSoftmax(Y U + b2)                         [B, T, V], natural log
      h        = Y_h                                           [B, Dh], the state after the last step

ONNX's RNN operator takes its input time-major ([T, B, d]) and weights in
the column-vector convention (x Wᵀ), hence the transposes of I and H. A
class-softmax model exports its normalised product distribution,
log P(c(w)|h) + log P(w|c(w),h): a LogSoftmax over the K classes,
gathered for each word's class, plus a LogSoftmax within each class's
contiguous columns (one Split, K LogSoftmax, one Concat). Batch and time
are dynamic. ``vocab.txt`` is written beside the graph (elman's format:
one token a line, id = line number), and the graph's metadata gives the
ids of ``<unk>`` and ``<eos>``: feed ``<eos>`` as the first id of a text
and h0 = the model's starting state, as elman does: the metadata's
``h_start`` (a JSON list of Dh floats, float32 exactly) where the model has
one (an imported RNNLM model: its saved state), else 0. The state is the
caller's input, so it is data beside the graph, not part of it. The weights are float32 whatever the model's.

A model with direct connections of order N (``onnx_direct``) takes one more
input, history (int64, [B, N-2]: the words before ids, -1 for none; all
-1 with the first <eos>), and gives one more output, next_history (the
same for the next call, as h is h0's); its hashed n-gram weights are
added to the logits (the class logits too) in the graph, at opset 18,
hashed elman's way (``onnx_direct``) or RNNLM's (``onnx_rnnlm_direct``),
as the model's are (the metadata's direct_hash says which).
A model without them keeps the graph above at opset 17.

``scores`` builds the scoring graph instead (``onnx_scores``): input
targets too, output log_prob [B, T] (log P of each target only) in place of
log_probs; a class softmax forms K + |class| logits a position, not V.

A model with tensors the graph cannot express exactly (a hierarchical
softmax, anything but the tensors above) is refused in one line rather
than exported without them.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from elman import progress
from elman.atomic import atomic_write_bytes
from elman.core.params import DIRECT_NAMES, PARAM_NAMES, START_NAME, Params
from elman.errors import ElmanError
from elman.inference import onnx_direct, onnx_rnnlm_direct, onnx_scores
from elman.model.outputs import layer_for, model_outputs

OPSET = 17            # LogSoftmax on any axis, Split/Squeeze/Unsqueeze taking their sizes as inputs
IR_VERSION = 8        # the IR of opsets 17 and 18, so that older runtimes load the file too
MAX_BYTES = 2_000_000_000   # one protobuf message: 2 GiB at most


def exportable(arrays: dict, cfg: dict, where) -> None:
    """Refuse, in one line, a model with parts the graph does not express."""
    outputs = model_outputs()
    owned = {n for names in outputs.values() for n in names}
    extra = sorted(set(arrays) - set(PARAM_NAMES) - owned - set(DIRECT_NAMES) - {START_NAME})
    if extra:
        raise ElmanError(f"{where}: the model has tensors the ONNX graph cannot express ({', '.join(extra)}: "
                         "an output layer it does not know); not exported")
    output = cfg.get("output", "full")
    if output not in outputs:
        raise ElmanError(f"{where}: the output layer {output!r} cannot be expressed in the ONNX graph; not exported")


def _onnx():
    try:
        import onnx
        from onnx import helper
    except ImportError:
        raise ElmanError("elman export --onnx needs the onnx package: pip install 'elman[export]'") from None
    return onnx, helper


def build(p: Params, vocab, meta: dict, scores: bool = False):
    """The ONNX ModelProto of ``p``; ``scores``: the scoring graph (``onnx_scores``)."""
    onnx, helper = _onnx()
    from onnx import TensorProto, numpy_helper
    f32 = {k: np.ascontiguousarray(v, np.float32) for k, v in p.as_dict().items() if v.dtype.kind == "f"}
    Dh = p.Dh
    inits = {}
    nodes = onnx_scores.recurrence(p, f32, inits, helper) if scores else _rnn(Dh, f32, inits, helper)
    layer = layer_for(p)
    sparse = layer.onnx_sparse(p) if scores else ()        # spaces the scoring graph forms per target
    spaces = [space for space in layer.logit_spaces(p) if space.salt not in sparse]
    for z, weight, bias, _, _ in spaces:            # z = hid W + bias, then the direct terms' sum
        inits.update({weight: f32[weight], bias: f32[bias]})
        nodes += [helper.make_node("MatMul", ["hid", weight], [f"{z}_{weight}"]),
                  helper.make_node("Add", [f"{z}_{weight}", bias], [f"{z}_h" if p.order else z])]
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "time"]),
              helper.make_tensor_value_info("h0", TensorProto.FLOAT, ["batch", Dh])]
    outputs = [helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, ["batch", "time", p.V]),
               helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", Dh])]
    if scores:
        targets_in, log_prob_out = onnx_scores.io(helper)
        inputs, outputs = inputs + [targets_in], [log_prob_out] + outputs[1:]
    terms = None
    if p.order:
        logits = [(space.salt, space.width, f"{space.graph_name}_h", space.graph_name) for space in spaces]
        nodes += (onnx_rnnlm_direct.nodes(p, inits, helper, logits, scores) if p.direct_hash == "rnnlm"
                  else onnx_direct.nodes(p.order, f32["D"], inits, helper, logits, scores))
        if sparse:
            more, terms = onnx_scores.word_terms(p, inits, helper)
            nodes += more
        more_in, more_out = onnx_direct.io(helper, p.order)
        inputs, outputs = inputs + more_in, outputs + more_out
    nodes += layer.onnx_score_nodes(p, inits, helper, terms) if scores else layer.onnx_nodes(p, inits, helper)
    size = sum(a.nbytes for a in inits.values())
    if size > MAX_BYTES:
        raise ElmanError(f"the model's {size / 2**30:.1f} GiB of weights do not fit one ONNX file (2 GiB at most)")
    graph = helper.make_graph(nodes, "elman", inputs, outputs,
                              [numpy_helper.from_array(a, name) for name, a in inits.items()])
    opset = onnx_direct.OPSET if p.order or scores else OPSET
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="elman",
                              ir_version=IR_VERSION)
    helper.set_model_props(model, {k: str(v) for k, v in meta.items()})
    onnx.checker.check_model(model)
    return model


def _rnn(Dh: int, f32: dict, inits: dict, helper) -> list:
    """"hid" [B,T,Dh] and "h" [B,Dh] from "ids" and "h0": ONNX's RNN operator."""
    inits.update({"L": f32["L"], "W": f32["I"].T[None], "R": f32["H"].T[None],
                  "B": np.concatenate([f32["b1"], np.zeros(Dh, np.float32)])[None],
                  "axis0": np.array([0], np.int64), "axis1": np.array([1], np.int64)})
    return [
        helper.make_node("Gather", ["L", "ids"], ["e"]),
        helper.make_node("Transpose", ["e"], ["e_tbd"], perm=[1, 0, 2]),
        helper.make_node("Unsqueeze", ["h0", "axis0"], ["h0_1"]),
        helper.make_node("RNN", ["e_tbd", "W", "R", "B", "", "h0_1"], ["Y", "Y_h"],
                         hidden_size=Dh, activations=["Sigmoid"]),
        helper.make_node("Squeeze", ["Y", "axis1"], ["Y_tbh"]),
        helper.make_node("Transpose", ["Y_tbh"], ["hid"], perm=[1, 0, 2]),
        helper.make_node("Squeeze", ["Y_h", "axis0"], ["h"]),
    ]


def export(model_dir, onnx_path, scores: bool = False) -> dict:
    """Write ``onnx_path`` and ``vocab.txt`` beside it; returns the metadata.
    ``scores``: the scoring graph (``onnx_scores``) rather than log_probs."""
    from elman import modelfile
    arrays, _, cfg = modelfile.load_model(model_dir)
    exportable(arrays, cfg, model_dir)
    p, vocab, cfg = modelfile.load_params(model_dir)
    onnx_path = Path(onnx_path)
    if onnx_path.suffix != ".onnx":
        raise ElmanError(f"{onnx_path}: an ONNX file name ends in .onnx")
    if not onnx_path.parent.is_dir():
        raise ElmanError(f"{onnx_path.parent}: no such directory")
    vocab_bytes = vocab.to_text().encode("utf-8")
    meta = {"format": "elman-onnx-1", "source_format": cfg.get("format"), "level": cfg.get("level", "word"),
            "vocab_size": len(vocab), "hidden_size": p.Dh, "unk_id": vocab.unk_id, "eos_id": vocab.eos_id,
            "vocab_file": "vocab.txt", "vocab_sha256": hashlib.sha256(vocab_bytes).hexdigest(),
            "output": layer_for(p).name, "graph": "scores" if scores else "log_probs"}
    if p.order:
        meta.update(direct_order=p.order, direct_size=int(p.D.size), history_size=p.order - 2,
                    direct_hash=p.direct_hash)
    if p.h_start is not None:
        meta["h_start"] = json.dumps([float(x) for x in np.asarray(p.h_start, np.float32)])
    with progress.job("export", "steps", 3, note="no file half-written") as job:
        model = build(p, vocab, meta, scores)
        job.update()
        data = model.SerializeToString()
        job.update()
        atomic_write_bytes(onnx_path.parent / "vocab.txt", vocab_bytes)
        atomic_write_bytes(onnx_path, data)
        job.update()
    return meta
