"""``elman export --onnx FILE --scores``: the scoring graph, log P of given
targets only (``onnx_export`` builds it; this module holds its own parts).

    ids, targets (int64, [B, T]), h0 (float32, [B, Dh])      (+ history with direct connections)
      log_prob = log P(targets[b, t] | ids[b, :t+1], h0)     float32 [B, T], natural log
      h                                                      (+ next_history), as the log_probs graph's

A class-softmax model never forms the V logits of a position: the K class
logits, then for each class k (unrolled, K static subgraphs) the flat
positions whose target is in k (NonZero), their hidden rows times U's
columns of k plus b2's and the direct terms of those words there,
LogSoftmax, the target's by GatherElements; one ScatterElements puts the
classes' results back in place (``core.classes.ClassSoftmax.onnx_score_nodes``).
The full softmax gathers its LogSoftmax (the same interface, no saving).

The direct terms of the words of class k at positions n (``word_terms``):

    elman's hashing:  z[n, j] += Σ_f D[o_f(n) + bounds[k] + j]           o_f: ``onnx_direct`` offsets
    RNNLM's hashing:  z[n, j] += const[bounds[k] + j]                       the empty context
                               + Σ_a [j < lim_a(n)] D[min(ow_a(n) + j, M-1)]

where RNNLM's word offsets ow_a and limits lim_a (``onnx_rnnlm_direct``)
are those of the target's class, computed once a position: the rows of
class k are exactly the positions whose target's class is k.

Two choices measured in onnxruntime (bench/onnx_scoring.py,
docs/benchmarks/scoring.md): the recurrence is a Scan over a table of
e I + b1 (``recurrence``), about three times as fast as the RNN operator
the log_probs graph keeps; D's windows are read with GatherElements
(``onnx_direct.take``), about 2.7 times Gather's rate for single elements.
"""
from __future__ import annotations

import numpy as np

from elman.core import rnnlm_direct as rd
from elman.core.classes import word_classes
from elman.core.direct import WORDS
from elman.inference import onnx_direct, onnx_rnnlm_direct

TARGETS, LOG_PROB = "targets", "log_prob"
TABLE_BYTES = 256 << 20     # e I + b1 of every word as one table up to this size, else each position's product


def recurrence(p, f32: dict, inits: dict, helper) -> list:
    """"hid" [B,T,Dh] and "h" [B,Dh] from "ids" and "h0": a Scan of
    h(t) = sigmoid(x(t) + h(t-1) H), x = e I + b1 read from a table of every
    word (or computed a position at a time where the table would be large).
    onnxruntime runs this about three times as fast as its RNN operator
    (bench/onnx_scoring.py), the same function to float32 rounding."""
    from onnx import TensorProto
    Dh = p.Dh
    inits["H"] = f32["H"]
    if p.V * Dh * 4 <= TABLE_BYTES:
        inits["LI"] = (f32["L"].astype(np.float64) @ f32["I"] + f32["b1"]).astype(np.float32)
        nodes = [helper.make_node("Gather", ["LI", "ids"], ["x"])]
    else:
        inits.update(L=f32["L"], I=f32["I"], b1=f32["b1"])
        nodes = [helper.make_node("Gather", ["L", "ids"], ["e"]),
                 helper.make_node("MatMul", ["e", "I"], ["eI"]),
                 helper.make_node("Add", ["eI", "b1"], ["x"])]
    body = helper.make_graph(
        [helper.make_node("MatMul", ["scan_h", "H"], ["scan_hH"]),
         helper.make_node("Add", ["scan_hH", "scan_x"], ["scan_a"]),
         helper.make_node("Sigmoid", ["scan_a"], ["scan_next"]),
         helper.make_node("Identity", ["scan_next"], ["scan_y"])], "step",
        [helper.make_tensor_value_info("scan_h", TensorProto.FLOAT, ["batch", Dh]),
         helper.make_tensor_value_info("scan_x", TensorProto.FLOAT, ["batch", Dh])],
        [helper.make_tensor_value_info("scan_next", TensorProto.FLOAT, ["batch", Dh]),
         helper.make_tensor_value_info("scan_y", TensorProto.FLOAT, ["batch", Dh])])
    scan = helper.make_graph(
        [helper.make_node("Scan", ["h0", "x"], ["scan_last", "scan_all"], body=body, num_scan_inputs=1,
                          scan_input_axes=[1], scan_output_axes=[1])], "steps", [],
        [helper.make_tensor_value_info("scan_last", TensorProto.FLOAT, ["batch", Dh]),
         helper.make_tensor_value_info("scan_all", TensorProto.FLOAT, ["batch", "time", Dh])])
    # onnxruntime's Scan stops the process (SIGFPE) on an empty input: no steps, or no rows, keep h0
    empty = helper.make_graph(
        [helper.make_node("Identity", ["h0"], ["empty_last"]), helper.make_node("Identity", ["x"], ["empty_all"])],
        "none", [], [helper.make_tensor_value_info("empty_last", TensorProto.FLOAT, ["batch", Dh]),
                     helper.make_tensor_value_info("empty_all", TensorProto.FLOAT, ["batch", "time", Dh])])
    inits["scan_none"] = np.array(0, np.int64)
    return nodes + [helper.make_node("Size", ["x"], ["scan_size"]),
                    helper.make_node("Greater", ["scan_size", "scan_none"], ["scan_any"]),
                    helper.make_node("If", ["scan_any"], ["h", "hid"], then_branch=scan, else_branch=empty)]


def io(helper):
    """The value infos of the scoring graph's extra input and of its first output."""
    from onnx import TensorProto
    return (helper.make_tensor_value_info(TARGETS, TensorProto.INT64, ["batch", "time"]),
            helper.make_tensor_value_info(LOG_PROB, TensorProto.FLOAT, ["batch", "time"]))


def word_terms(p, inits: dict, helper) -> tuple:
    """(nodes, terms): the nodes of the per-position word offsets (after the
    direct connections' own nodes), and ``terms(tag, rows, first, width, z)``
    -> (nodes, z') adding the words first..first+width-1's direct terms at
    the flat positions ``rows`` to z [n, width]."""
    inits.update(st_axis1=np.array([1], np.int64), st_last=np.array([-1], np.int64),
                 st_flat=np.array([-1, max(p.order - 1, 1)], np.int64))
    if p.direct_hash == "rnnlm":
        return _rnnlm_offsets(p, inits, helper)
    nodes = onnx_direct.offset_nodes(p.order, p.D.size, WORDS, p.V, inits, helper)
    offsets = [onnx_direct.offset_name(WORDS, k) for k in range(1, p.order)]
    nodes += _stack(offsets, "st_offs", helper)

    def terms(q, rows, first, width, z):
        inits[q + "cols"] = first + np.arange(width, dtype=np.int64)
        return [helper.make_node("Gather", ["st_offs", rows], [q + "o"]),            # [n, F]
                helper.make_node("Unsqueeze", [q + "o", "st_last"], [q + "o1"]),
                helper.make_node("Add", [q + "o1", q + "cols"], [q + "idx"]),       # [n, F, width]
                *onnx_direct.take(helper, inits, q + "idx", q + "win", True),
                helper.make_node("ReduceSum", [q + "win", "st_axis1"], [q + "dz"], keepdims=0),
                helper.make_node("Add", [z, q + "dz"], [q + "zd"])], q + "zd"
    return nodes, terms


def _stack(names, out: str, helper) -> list:
    """out = the (B,T) tensors ``names`` as columns of (B·T, F), flat positions in rows."""
    nodes = [helper.make_node("Unsqueeze", [n, "st_last"], [n + "_col"]) for n in names]
    return nodes + [helper.make_node("Concat", [n + "_col" for n in names], [out + "_btf"], axis=-1),
                    helper.make_node("Reshape", [out + "_btf", "st_flat"], [out])]


def _rnnlm_offsets(p, inits: dict, helper) -> tuple:
    """``word_terms`` of RNNLM's hashing: each position's word offsets and
    limits for its target's class, after ``onnx_rnnlm_direct.nodes``."""
    from onnx import TensorProto
    N, M, bounds = p.order, p.D.size, np.asarray(p.class_bounds, np.int64)
    K = len(bounds) - 1
    const, O0 = onnx_rnnlm_direct.feature0_words(np.asarray(p.D, np.float32), bounds)
    inits.update(st_cls=word_classes(bounds, np.arange(p.V)), st_top0=O0.astype(np.int64),
                 st_base=np.uint64(rd.BASE) * (np.arange(K, dtype=np.uint64) + np.uint64(1)))
    nodes = [helper.make_node("Gather", ["st_cls", TARGETS], ["st_c"]),
             helper.make_node("Gather", ["st_base", "st_c"], ["st_b"]),
             helper.make_node("Gather", ["st_top0", "st_c"], ["st_top_0"])]
    for a in range(1, N):
        q = f"st_{a}_"
        lim = q + "lim0" if p.direct_oov is not None else q + "lim"
        nodes += [helper.make_node("Add", [f"rd_S_{a}", "st_b"], [q + "s"]),
                  helper.make_node("Mod", [q + "s", "rd_h"], [q + "m"]),
                  helper.make_node("Cast", [q + "m"], [q + "m64"], to=TensorProto.INT64),
                  helper.make_node("Add", [q + "m64", "rd_hi"], [q + "o"]),
                  helper.make_node("Max", [f"st_top_{a - 1}", q + "o"], [f"st_top_{a}"]),
                  helper.make_node("Sub", ["rd_M", f"st_top_{a}"], [lim])]
        if p.direct_oov is not None:
            nodes.append(helper.make_node("Where", [f"rd_alive_{a}", lim, "rd_zero"], [q + "lim"]))
    if N > 1:
        nodes += _stack([f"st_{a}_o" for a in range(1, N)], "st_offs", helper)
        nodes += _stack([f"st_{a}_lim" for a in range(1, N)], "st_lims", helper)

    def terms(q, rows, first, width, z):
        inits.update({q + "const": const[first:first + width], q + "j": np.arange(width, dtype=np.int64)})
        out = [helper.make_node("Add", [z, q + "const"], [q + "z1"])]
        if N == 1:
            return out, q + "z1"
        return out + [
            helper.make_node("Gather", ["st_offs", rows], [q + "o"]),                 # [n, F]
            helper.make_node("Unsqueeze", [q + "o", "st_last"], [q + "o1"]),
            helper.make_node("Add", [q + "o1", q + "j"], [q + "i0"]),                # [n, F, width]
            helper.make_node("Min", [q + "i0", "rd_Mm1"], [q + "idx"]),
            *onnx_direct.take(helper, inits, q + "idx", q + "win", True),
            helper.make_node("Gather", ["st_lims", rows], [q + "l"]),
            helper.make_node("Unsqueeze", [q + "l", "st_last"], [q + "l1"]),
            helper.make_node("Less", [q + "j", q + "l1"], [q + "on"]),
            helper.make_node("Where", [q + "on", q + "win", "rd_fzero"], [q + "t"]),
            helper.make_node("ReduceSum", [q + "t", "st_axis1"], [q + "dz"], keepdims=0),
            helper.make_node("Add", [q + "z1", q + "dz"], [q + "zd"])], q + "zd"
    return nodes, terms
