"""Direct connections (``core.direct``) in the ONNX graph of ``onnx_export``.

A model of order N takes one more input and gives one more output:

    history (int64, [B, N-2]): the N-2 words before ids[:, 0], -1 for none
                               (all -1 at the start of a text)
      ctx          = Concat(history, ids)                     [B, N-2+T]
      words        = Cast(ctx + 1, uint64)                    -1 (none) -> 0
      h            = salt * GOLDEN                            uint64, mod 2^64
      for k = 1..N-1:                                         the context one word further back
        h          = mix(h XOR (words[:, N-1-k : N-1-k+T] + k * GOLDEN))
        o_k        = Cast(h mod (M-W+1), int64)               [B, T]
        z         += Gather(D, o_k[..., None] + arange(W))    [B, T, W]
    next_history = ctx[:, T:]                                 [B, N-2], the history of the next call

mix is splitmix64's finaliser. The words' logits (W = V) use the salt
``WORDS``; with a class softmax the class logits (W = K) get windows of
their own from the salt ``CLASSES``: ``core.direct.offsets`` either way.
The hash is computed in the graph, on uint64 tensors: BitwiseXor needs
opset 18, and onnxruntime's uint64 Add, Mul, BitShift and Mod wrap mod 2^64
as NumPy's do, so the offsets are elman's bit for bit (the tests check
ids near 2^31).
"""
from __future__ import annotations

import numpy as np

from elman.core import direct as dc

OPSET = 18              # BitwiseXor
HISTORY, NEXT_HISTORY = "history", "next_history"
_END = np.iinfo(np.int64).max     # Slice's "to the end", whatever T is


def io(helper, order: int):
    """The value infos of the extra input and output."""
    from onnx import TensorProto
    n = order - 2
    return ([helper.make_tensor_value_info(HISTORY, TensorProto.INT64, ["batch", n])],
            [helper.make_tensor_value_info(NEXT_HISTORY, TensorProto.INT64, ["batch", n])])


def offset_name(salt: int, k: int) -> str:
    """The graph's (B,T) int64 offsets of context length k (read by the tests)."""
    return f"direct_{'words' if salt == dc.WORDS else 'classes'}_offset_{k}"


def nodes(order: int, D, inits: dict, helper, targets, elements: bool = False) -> list:
    """The nodes that add the direct terms to logits; ``targets``: (salt,
    width, logits in, logits out) for each set of logits; ``elements``: read
    D's windows as ``take`` does with it. D goes to ``inits``."""
    out = shared_nodes(order, D, inits, helper)
    for salt, width, z_in, z_out in targets:
        tag = "words" if salt == dc.WORDS else "classes"
        out += offset_nodes(order, D.size, salt, width, inits, helper)
        inits[f"direct_cols_{tag}"] = np.arange(width, dtype=np.int64)
        z = z_in
        # one window added at a time: a Gather of all F at once would hold F times the logits
        for k in range(1, order):
            p = f"direct_{tag}_{k}_"
            out += [
                helper.make_node("Unsqueeze", [offset_name(salt, k), "direct_last"], [p + "o1"]),
                helper.make_node("Add", [p + "o1", f"direct_cols_{tag}"], [p + "idx"]),
                *take(helper, inits, p + "idx", p + "win", elements),
                helper.make_node("Add", [z, p + "win"], [z_out if k == order - 1 else p + "z"]),
            ]
            z = p + "z"
    return out


def shared_nodes(order: int, D, inits: dict, helper) -> list:
    """The context and its words, each lag's hash input direct_wk_k; D and the constants go to ``inits``."""
    from onnx import TensorProto
    inits.update(direct_one=np.array(1, np.int64), direct_last=np.array([-1], np.int64),
                 direct_m1=np.array(dc._M1), direct_m2=np.array(dc._M2), direct_s30=np.array(dc._S30),
                 direct_s27=np.array(dc._S27), direct_s31=np.array(dc._S31))
    out = context_nodes(order, D, inits, helper) + [
        helper.make_node("Add", ["direct_ctx", "direct_one"], ["direct_ctx1"]),
        helper.make_node("Cast", ["direct_ctx1"], ["direct_words"], to=TensorProto.UINT64),
    ]
    for k in range(1, order):
        inits[f"direct_k_{k}"] = _u64(k * dc._GOLDEN)
        out += [lag_node(order, k, "direct_words", f"direct_w_{k}", inits, helper),
                helper.make_node("Add", [f"direct_w_{k}", f"direct_k_{k}"], [f"direct_wk_{k}"])]
    return out


def offset_nodes(order: int, M: int, salt: int, width: int, inits: dict, helper) -> list:
    """The (B,T) int64 offsets ``offset_name(salt, k)``, k = 1..order-1, of
    windows ``width`` wide in a table of M (after ``shared_nodes``)."""
    from onnx import TensorProto
    tag = "words" if salt == dc.WORDS else "classes"
    inits[f"direct_seed_{tag}"] = _u64(salt * dc._GOLDEN)
    inits[f"direct_span_{tag}"] = np.array(M - width + 1, np.uint64)
    h, out = f"direct_seed_{tag}", []
    for k in range(1, order):
        p = f"direct_{tag}_{k}_"
        out += [helper.make_node("BitwiseXor", [h, f"direct_wk_{k}"], [p + "x"]),
                *_mix(helper, p + "x", p + "h"),
                helper.make_node("Mod", [p + "h", f"direct_span_{tag}"], [p + "o"]),
                helper.make_node("Cast", [p + "o"], [offset_name(salt, k)], to=TensorProto.INT64)]
        h = p + "h"
    return out


def context_nodes(order: int, D, inits: dict, helper) -> list:
    """direct_ctx = Concat(history, ids) and next_history; D and the shared constants go to ``inits``."""
    n = order - 2
    inits.update(D=np.ascontiguousarray(D, np.float32), direct_axis1=np.array([1], np.int64),
                 # n = 0 (order 2): an empty history, not the whole of ctx
                 direct_keep=np.array([-n if n else _END], np.int64), direct_end=np.array([_END], np.int64))
    return [helper.make_node("Concat", [HISTORY, "ids"], ["direct_ctx"], axis=1),
            helper.make_node("Slice", ["direct_ctx", "direct_keep", "direct_end", "direct_axis1"], [NEXT_HISTORY])]


def take(helper, inits: dict, idx: str, out: str, elements: bool) -> list:
    """out = D[idx], idx of any shape: a Gather, or with ``elements`` a
    GatherElements of idx flattened, the same values (onnxruntime reads
    single elements with GatherElements about 2.7 times as fast)."""
    if not elements:
        return [helper.make_node("Gather", ["D", idx], [out])]
    inits["direct_flat"] = np.array([-1], np.int64)
    return [helper.make_node("Reshape", [idx, "direct_flat"], [idx + "_flat"]),
            helper.make_node("GatherElements", ["D", idx + "_flat"], [out + "_flat"]),
            helper.make_node("Shape", [idx], [idx + "_shape"]),
            helper.make_node("Reshape", [out + "_flat", idx + "_shape"], [out], allowzero=1)]     # a 0 is a 0


def lag_node(order: int, k: int, src: str, out: str, inits: dict, helper):
    """out = src[:, n+1-k : n+1-k+T] (src (B, n+T) as direct_ctx): the word k-1 places before each x(t)."""
    n = order - 2
    inits[f"direct_from_{k}"] = np.array([n + 1 - k], np.int64)
    inits[f"direct_to_{k}"] = np.array([-(k - 1) if k > 1 else _END], np.int64)
    return helper.make_node("Slice", [src, f"direct_from_{k}", f"direct_to_{k}", "direct_axis1"], [out])


def _u64(x: int):
    return np.array(x & dc._MASK, np.uint64)


def _mix(helper, x: str, y: str) -> list:
    """splitmix64's finaliser, y = mix(x), as ``core.direct._mix``."""
    out, z = [], x
    for i, (shift, mult) in enumerate((("direct_s30", "direct_m1"), ("direct_s27", "direct_m2"), ("direct_s31", None))):
        shifted, xored = f"{x}_s{i}", f"{x}_x{i}" if mult else y
        out += [helper.make_node("BitShift", [z, shift], [shifted], direction="RIGHT"),
                helper.make_node("BitwiseXor", [z, shifted], [xored])]
        if mult:
            z = f"{x}_m{i}"
            out.append(helper.make_node("Mul", [xored, mult], [z]))
    return out
