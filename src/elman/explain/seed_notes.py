"""Where the seed's solution differs from the gradients of J, and why.

The seed (``shared/seed/rnnlm-gradients.md``) gives eight formulas. Each is
kept here twice: as the seed prints it (for the reader) and as NumPy over
the checker's names (so ``elman check`` gives the verdict and the tests can
hold the seed to it). The seed's ∂J/∂b1 is (∂J/∂h) ⊙ sigmoid'(z1) built from
its own (y - ŷ), so everything after it inherits that sign.
"""
from __future__ import annotations

from elman.explain.notation import M

# All eight of the seed's quantities, in the seed's order: `elman explain all`.
ORDER = ("U", "h", "b2", "b1", "L_x", "I", "H", "h_prev")

_S1 = "((y - yhat) @ U.T) * h * (1 - h)"          # the seed's ∂J/∂b1|(t), written out
_S1_TEXT = M("((y − ŷ) Uᵀ) ⊙ sigmoid′(h(t−1) H + e I + b1)",
             r"\left((y-\hat{y})U^{\top}\right)\odot\operatorname{sigmoid}'\!\left(h^{(t-1)}H+e^{(t)}I+b_1\right)")

SIGN = ["The seed's (y − ŷ) is the gradient of the log-likelihood log ŷ_y with respect to z2, that is −dJ/dz2 "
        "(dJ/dz2 = ŷ − y). With it every formula comes out as the gradient of the log-likelihood, the "
        "negative of the gradient of J: right for gradient ascent on log ŷ_y, wrong as a gradient of the loss. "
        "Subtracting it from the weights, as one does with dJ/dθ, would make the loss grow."]
AT_T = ["The seed's |(t) means the contribution of step t's own use of the weight, with h(t−1) held fixed. "
        "J(t) also depends on the weight through h(t−1), h(t−2), …; the full gradient of a sequence's loss is "
        "the sum of these contributions over every step, with each δ1 carrying what flows back from later steps: "
        "see `elman explain bptt`."]

AT_T_SUM = ["The seed's ∂J(t)/∂H|(t) = h(t−1)ᵀ ∂J(t)/∂b1|(t) is one summand of such a sum, taken with h(t−1) "
            "held fixed and with δ1 from J(t) alone. Summing those \"at (t)\" terms is not the gradient of the "
            "sequence's loss: the δ1(t+1) Hᵀ term is what carries later losses back to earlier steps. The "
            "column \"without the carried term\" of the witness below shows how far off the sum is without it."]

SEED = {
    "U": (M("(h(t))ᵀ (y − ŷ)", r"\left(h^{(t)}\right)^{\top}(y-\hat{y})"), "h.T @ (y - yhat)",
          ["The transpose and the order are right: hᵀ(y − ŷ) is the outer product of a Dh×1 column and a "
           "1×|V| row, Dh×|V| like U. Only the sign differs."]),
    "h": (M("(y − ŷ) Uᵀ", r"(y-\hat{y})U^{\top}"), "(y - yhat) @ U.T",
          ["The order is right for row vectors: the row δ2 first, then Uᵀ, (1×|V|)(|V|×Dh) = 1×Dh. "
           "Only the sign differs."]),
    "b2": (M("y − ŷ", r"y-\hat{y}"), "y - yhat", []),
    "b1": (_S1_TEXT, _S1,
           ["sigmoid′(h(t−1) H + e I + b1) is σ′(z1) = σ(z1)(1 − σ(z1)) = h ⊙ (1 − h): the forward pass's h "
            "gives it with no further exp. The product with ∂J/∂h is element-wise, as the seed writes it."]
           + AT_T),
    "L_x": (M("(∂J/∂b1|(t)) Iᵀ", r"\left.\frac{\partial J}{\partial b_1}\right|_{(t)} I^{\top}"),
            f"({_S1}) @ I.T",
            ["∂J/∂L_x = ∂J/∂e is right: e = x L is row x of L, so the gradient of that row is the gradient of "
             "e, here δ1 Iᵀ (1×Dh)(Dh×d) = 1×d. It inherits the sign of (y − ŷ)."]),
    "I": (M("(e(t))ᵀ (∂J/∂b1|(t))", r"\left(e^{(t)}\right)^{\top}\left.\frac{\partial J}{\partial b_1}\right|_{(t)}"),
          f"e.T @ ({_S1})", ["The outer product eᵀ δ1 is right, (d×1)(1×Dh) = d×Dh; the sign is inherited."]
          + AT_T),
    "H": (M("(h(t−1))ᵀ (∂J/∂b1|(t))",
            r"\left(h^{(t-1)}\right)^{\top}\left.\frac{\partial J}{\partial b_1}\right|_{(t)}"),
          f"h_prev.T @ ({_S1})",
          ["The outer product h(t−1)ᵀ δ1 is right, (Dh×1)(1×Dh) = Dh×Dh; the sign is inherited."] + AT_T),
    "h_prev": (M("Hᵀ (∂J/∂b1|(t))", r"H^{\top}\left.\frac{\partial J}{\partial b_1}\right|_{(t)}"),
               f"H.T @ ({_S1})",
               ["Hᵀ · ∂J/∂b1 does not conform for row vectors: Hᵀ is Dh×Dh and ∂J/∂b1 a 1×Dh row, "
                "(Dh×Dh)(1×Dh). In index form dJ/dh(t−1)_i = Σ_j δ1_j H_ij = (δ1 Hᵀ)_i: the row comes first. "
                "Hᵀ δ1 is the column-vector formula for a model written h = σ(H h(t−1) + …), whose H is the "
                "transpose of the seed's (H̃ᵀ δ1 in section 5): a formula of the other convention, carried into "
                "a row-vector derivation."]),
}
