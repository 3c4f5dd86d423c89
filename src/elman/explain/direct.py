"""``elman explain D``: the gradient of the direct connections (RNNME).

Not derived by the equation engine: the hashed lookup is an embedding of
several ids into overlapping windows of one table, which the equation
language does not write. The explanation follows the engine's order
(forward, indices, matrices and the transpose, shapes, columns, a witness)
and its witness is elman's own backward pass (``elman.model.bptt``) beside
central differences of J on a random float64 instance.
"""
from __future__ import annotations

import numpy as np

from elman.explain.document import Display, Document, Heading, Para, Table, mdict
from elman.explain.notation import M

TARGETS = ("D", "direct")


def _m(text: str, tex: str) -> M:
    return M(text, tex)


FORWARD = [
    _m("z2 = h U + b2 + Σ_f Dw[o_f]        Dw[o] = D[o : o+|V|],  o_f = hash(k_f, its words) mod (M−|V|+1)",
       r"z_{2} = h U + b_{2} + \sum_f D_w[o_f] \qquad D_w[o] = D[o : o+|V|],\ "
       r"o_f = \mathrm{hash}(k_f, \text{its words}) \bmod (M-|V|+1)"),
    _m("   = h U + b2 + φ Dw                  φ: 1×(M−|V|+1), a 1 at each o_f (multi-hot)",
       r"\phantom{z_2} = h U + b_{2} + \varphi D_w \qquad \varphi \in \{0,1\}^{1\times(M-|V|+1)}"),
]
INDICES = [
    _m("z2_j = Σ_i h_i U_ij + b2_j + Σ_f D_(o_f + j)",
       r"z_{2,j} = \sum_i h_i U_{ij} + b_{2,j} + \sum_f D_{o_f + j}"),
    _m("∂z2_j/∂D_m = Σ_f [m = o_f + j]", r"\frac{\partial z_{2,j}}{\partial D_m} = \sum_f [m = o_f + j]"),
    _m("dJ/dD_m = Σ_j δ2_j Σ_f [m = o_f + j] = Σ_f δ2_(m − o_f)      (0 ≤ m − o_f < |V|)",
       r"\frac{\partial J}{\partial D_m} = \sum_j \delta_{2,j} \sum_f [m = o_f + j] = "
       r"\sum_f \delta_{2,\,m-o_f} \quad (0 \le m-o_f < |V|)"),
]
MATRICES = [
    _m("dJ/dDw = φᵀ δ2          ((M−|V|+1)×1)(1×|V|) = (M−|V|+1)×|V|, the shape of Dw",
       r"\frac{\partial J}{\partial D_w} = \varphi^{\top} \delta_{2} \qquad "
       r"((M-|V|+1)\times 1)(1\times |V|) = (M-|V|+1)\times |V|"),
    _m("column vectors (z = Dwᵀ φᵀ + …):  dJ/dDwᵀ = δ2ᵀ φ = (φᵀ δ2)ᵀ",
       r"\text{column vectors } (z = D_w^{\top}\varphi^{\top} + \dots):\ "
       r"\frac{\partial J}{\partial D_w^{\top}} = \delta_2^{\top}\varphi = (\varphi^{\top}\delta_2)^{\top}"),
]


def witness(V=5, M=9, seed=0):
    """Rows (m, formula, central difference) and the largest difference, for
    dJ/dD of one window of a random float64 model of order 3."""
    from elman.model.gradcheck import central_difference
    from elman.model import Params, bptt

    rng = np.random.default_rng(seed)
    p = Params.init(V, 3, 4, seed=seed, dtype="float64", direct=M, direct_order=3)
    for a in p.as_dict().values():
        if a.dtype.kind == "f":
            a[...] = rng.normal(0, 0.5, a.shape)
    x, y, h0 = rng.integers(0, V, (1, 2)), rng.integers(0, V, (1, 2)), rng.uniform(0, 1, (1, 4))
    hist = rng.integers(0, V, (1, 1))
    grad = bptt(p, x, y, h0, history=hist)[1]["D"]
    fd = central_difference(lambda: bptt(p, x, y, h0, history=hist)[0], p.D)
    return [(m, grad[m], fd[m]) for m in range(M)], float(np.abs(grad - fd).max())


def explain_direct() -> tuple[list, dict, bool]:
    """(blocks, data, ok): the explanation of dJ/dD as document blocks."""
    rows, worst = witness()
    ok = worst < 1e-8
    blocks = [
        Heading(2, ["The direct connections D (RNNME's hashed n-gram weights)"]),
        Para(["Forward: each feature f (the preceding 1, 2, …, N−1 words, hashed) reads a window of |V| "
              "weights of the flat table D (M) and adds it to the logits. A window is a row of Dw, the "
              "(M−|V|+1)×|V| matrix of D's overlapping windows, so the features are a multi-hot row φ "
              "times Dw: an embedding lookup of several ids, like e = x L."]),
        Display(FORWARD),
        Para(["Index notation: D_m reaches z2_j only when the window of a feature starting at o_f puts m "
              "at column j, i.e. m = o_f + j; the chain rule over the logits keeps those terms:"]),
        Display(INDICES),
        Para(["As matrices: the lookup φ Dw is a product, so its gradient is the embedding's, the outer "
              "product of the multi-hot column φᵀ and the row δ2 (the transpose puts φ's index on the "
              "rows: the rows of Dw, one per window): the rows o_f of dJ/dDw get δ2, every other row is "
              "zero. The rows share cells of D, so dJ/dD adds each row back into the cells it covers: "
              "the sum over f above. Over a batch and through time the positions add up, as for L; "
              "under the class softmax the class logits have windows of their own, and under sampled "
              "softmax δ2 is zero outside the target and the samples, so only the cells o_f + y and "
              "o_f + s_k get a gradient."]),
        Display(MATRICES),
        Para([f"Numerical witness (|V| = 5, M = 9, order 3: two features, windows overlapping; one "
              f"random float64 instance, two positions): elman's backward pass beside central "
              f"differences of J, largest difference {worst:.1e}."]),
        Table(["m", "dJ/dD_m (elman)", "central difference"],
              [[str(m), f"{g: .8f}", f"{n: .8f}"] for m, g, n in rows]),
    ]
    data = {"target": "D", "formula": mdict(INDICES[-1]), "matrix_formula": mdict(MATRICES[0]),
            "witness": {"rows": [[m, g, n] for m, g, n in rows], "max_abs_difference": worst, "ok": ok}}
    return blocks, data, ok


def merged(explanation, blocks, data, ok):
    """``explanation`` (from ``elman.explain.explain``, or None) with the direct
    connections' section added."""
    from elman.explain import Explanation
    if explanation is None:
        title = "Where the gradient of the direct connections comes from"
        doc = Document(title, [Heading(1, [title])], {"model": "seed + direct connections", "targets": []})
        explanation = Explanation(doc)
    explanation.document.blocks += blocks
    explanation.document.data["targets"].append(data)
    explanation.ok = explanation.ok and ok
    return explanation
