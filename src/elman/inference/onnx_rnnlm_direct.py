"""Direct connections hashed RNNLM's way (``core.rnnlm_direct``) in the ONNX
graph of ``onnx_export``: the same extra input and output as
``onnx_direct`` (history, next_history), RNNLM's offsets computed in the graph.

    ctx      = Concat(history, ids)                               [B, N-2+T]
    words    = Cast(Max(ctx, 0) + 1, uint64)                      none (-1) is word 0, RNNLM's start
    S_a      = Σ_{b=1..a} P(a,b) · words[lag b]                  uint64, a = 1..N-1
    alive_a  = alive_{a-1} and ctx[lag a] != oov                  (with an out-of-vocabulary id)
    class part, width K:
      oc_a   = Cast((BASE + S_a) mod h, int64)                    [B, T]
      on_a   = on_{a-1} and oc_a != 0 and alive_a
      zc    += Where(on_a, Gather(D, oc_a + arange(K)), 0)
    word part, width V, word w the j(w)-th of class k(w):
      ow_a   = Cast((BASE·(k+1) + S_a) mod h, int64) + h          [B, T, K]
      lim_a  = Where(alive_a, M - max_{b<=a} ow_b, 0)            [B, T, K]
      z     += Where(j(w) < lim_a[k(w)], Gather(D, min(ow_a[k(w)] + j(w), M-1)), 0)

Feature 0 (the empty context) does not depend on the input: its class and
word terms are computed here (``core.rnnlm_direct``) and enter as
constants. uint64 Mul, Add and Mod wrap mod 2^64 in onnxruntime as the C's
unsigned long long does; the tests hold the graph to ``elman score``.
"""
from __future__ import annotations

import numpy as np

from elman.core import direct as dc, rnnlm_direct as rd
from elman.inference.onnx_direct import context_nodes, lag_node, take


def nodes(p, inits: dict, helper, targets, elements: bool = False) -> list:
    """The nodes that add the direct terms of ``p`` (Params hashed RNNLM's
    way) to logits; ``targets``: (salt, width, logits in, logits out);
    ``elements``: D read as ``onnx_direct.take`` does with it."""
    from onnx import TensorProto
    N, D, M = p.order, np.asarray(p.D, np.float32), p.D.size
    bounds = np.array([0, p.V]) if not p.classes else np.asarray(p.class_bounds, np.int64)
    K, h = len(bounds) - 1, M // 2
    inits.update(rd_zero=np.array(0, np.int64), rd_one=np.array(1, np.int64), rd_h=np.array(h, np.uint64),
                 rd_hi=np.array(h, np.int64), rd_M=np.array(M, np.int64), rd_Mm1=np.array(M - 1, np.int64),
                 rd_fzero=np.array(0, np.float32), rd_last=np.array([-1], np.int64))
    out = context_nodes(N, D, inits, helper) + [
        helper.make_node("Max", ["direct_ctx", "rd_zero"], ["rd_ctx0"]),
        helper.make_node("Add", ["rd_ctx0", "rd_one"], ["rd_ctx1"]),
        helper.make_node("Cast", ["rd_ctx1"], ["rd_words"], to=TensorProto.UINT64),
    ]
    for b in range(1, N):
        out.append(lag_node(N, b, "rd_words", f"rd_w_{b}", inits, helper))
        if p.direct_oov is not None:
            inits["rd_oov"] = np.array(p.direct_oov, np.int64)
            out += [lag_node(N, b, "direct_ctx", f"rd_x_{b}", inits, helper),
                    helper.make_node("Equal", [f"rd_x_{b}", "rd_oov"], [f"rd_isoov_{b}"]),
                    helper.make_node("Not", [f"rd_isoov_{b}"], [f"rd_known_{b}"])]
    for a in range(1, N):                                   # S_a, and alive_a where an id can be out
        for b in range(1, a + 1):
            inits[f"rd_p_{a}_{b}"] = np.array(rd.prime(a, b), np.uint64)
            term, acc = f"rd_pw_{a}_{b}", f"rd_S_{a}" if b == a else f"rd_S_{a}_{b}"
            out.append(helper.make_node("Mul", [f"rd_w_{b}", f"rd_p_{a}_{b}"], [term if b > 1 else acc]))
            if b > 1:
                out.append(helper.make_node("Add", [f"rd_S_{a}_{b - 1}", term], [acc]))
        if p.direct_oov is not None:
            out.append(helper.make_node("And", [f"rd_alive_{a - 1}", f"rd_known_{a}"], [f"rd_alive_{a}"])
                       if a > 1 else helper.make_node("Identity", ["rd_known_1"], ["rd_alive_1"]))
    S0 = np.zeros((1, 1), np.uint64)                       # feature 0 alone
    alive = p.direct_oov is not None
    for salt, width, z_in, z_out in targets:
        if salt == dc.CLASSES:
            out += _class_part(N, D, K, S0, alive, inits, helper, z_in, z_out, elements)
        else:
            out += _word_part(N, D, bounds, alive, inits, helper, z_in, z_out, elements)
    return out


def feature0_words(D, bounds) -> tuple:
    """Feature 0 (the empty context) of the word part: its term of each word
    (V,) float32 and its offset for each class (K,) int64, constants."""
    S0 = np.zeros((1, 1), np.uint64)
    const = rd.word_forward(S0, np.asarray(D, np.float64), bounds)[0][0].astype(np.float32)
    return const, np.stack([rd.word_offsets(S0, D.size, k)[0][0, 0] for k in range(len(bounds) - 1)])


def _class_part(N, D, K, S0, alive, inits, helper, z_in, z_out, elements) -> list:
    from onnx import TensorProto
    O0, on0 = rd.class_offsets(S0, D.size)
    inits.update(rd_c_const=(D[O0[0, 0] + np.arange(K)] * on0[0, 0]).astype(np.float32),
                 rd_c_base=np.array(rd.BASE, np.uint64), rd_c_cols=np.arange(K, dtype=np.int64),
                 rd_c_on0=np.array(bool(on0[0, 0])))
    z, on = "rd_c_z_0", "rd_c_on0"
    out = [helper.make_node("Add", [z_in, "rd_c_const"], [z_out if N == 1 else z])]
    for a in range(1, N):
        q = f"rd_c_{a}_"
        out += [helper.make_node("Add", [f"rd_S_{a}", "rd_c_base"], [q + "s"]),
                helper.make_node("Mod", [q + "s", "rd_h"], [q + "m"]),
                helper.make_node("Cast", [q + "m"], [q + "o"], to=TensorProto.INT64),
                helper.make_node("Equal", [q + "o", "rd_zero"], [q + "zero"]),
                helper.make_node("Not", [q + "zero"], [q + "nz"]),
                helper.make_node("And", [on, q + "nz"], [q + "on0" if alive else q + "on"])]
        if alive:
            out.append(helper.make_node("And", [q + "on0", f"rd_alive_{a}"], [q + "on"]))
        out += [helper.make_node("Unsqueeze", [q + "o", "rd_last"], [q + "o1"]),
                helper.make_node("Add", [q + "o1", "rd_c_cols"], [q + "idx"]),
                *take(helper, inits, q + "idx", q + "win", elements),
                helper.make_node("Unsqueeze", [q + "on", "rd_last"], [q + "on1"]),
                helper.make_node("Where", [q + "on1", q + "win", "rd_fzero"], [q + "t"]),
                helper.make_node("Add", [z, q + "t"], [z_out if a == N - 1 else q + "z"])]
        z, on = q + "z", q + "on"
    return out


def _word_part(N, D, bounds, alive, inits, helper, z_in, z_out, elements) -> list:
    from onnx import TensorProto
    K, V, M = len(bounds) - 1, int(bounds[-1]), D.size
    cls = np.repeat(np.arange(K, dtype=np.int64), np.diff(bounds))
    j = np.arange(V, dtype=np.int64) - bounds[cls]
    const, O0 = feature0_words(D, bounds)
    inits.update(rd_w_const=const, rd_w_cls=cls, rd_w_j=j, rd_w_max0=O0.astype(np.int64),
                 rd_w_base=(np.uint64(rd.BASE) * (np.arange(K, dtype=np.uint64) + np.uint64(1))))
    z, top = "rd_w_z_0", "rd_w_max0"
    out = [helper.make_node("Add", [z_in, "rd_w_const"], [z_out if N == 1 else z])]
    for a in range(1, N):
        q = f"rd_w_{a}_"
        out += [helper.make_node("Unsqueeze", [f"rd_S_{a}", "rd_last"], [q + "S1"]),
                helper.make_node("Add", [q + "S1", "rd_w_base"], [q + "s"]),           # [B,T,K]
                helper.make_node("Mod", [q + "s", "rd_h"], [q + "m"]),
                helper.make_node("Cast", [q + "m"], [q + "m64"], to=TensorProto.INT64),
                helper.make_node("Add", [q + "m64", "rd_hi"], [q + "o"]),
                helper.make_node("Max", [top, q + "o"], [q + "top"]),
                helper.make_node("Sub", ["rd_M", q + "top"], [q + "lim0" if alive else q + "lim"])]
        if alive:
            out += [helper.make_node("Unsqueeze", [f"rd_alive_{a}", "rd_last"], [q + "al"]),
                    helper.make_node("Where", [q + "al", q + "lim0", "rd_zero"], [q + "lim"])]
        out += [helper.make_node("Gather", [q + "o", "rd_w_cls"], [q + "ow"], axis=2),           # [B,T,V]
                helper.make_node("Gather", [q + "lim", "rd_w_cls"], [q + "limw"], axis=2),
                helper.make_node("Less", ["rd_w_j", q + "limw"], [q + "on"]),
                helper.make_node("Add", [q + "ow", "rd_w_j"], [q + "i0"]),
                helper.make_node("Min", [q + "i0", "rd_Mm1"], [q + "idx"]),
                *take(helper, inits, q + "idx", q + "win", elements),
                helper.make_node("Where", [q + "on", q + "win", "rd_fzero"], [q + "t"]),
                helper.make_node("Add", [z, q + "t"], [z_out if a == N - 1 else q + "z"])]
        z, top = q + "z", q + "top"
    return out
