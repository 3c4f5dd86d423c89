"""The chain rule, one kind of equation at a time.

Each rule looks at one forward equation and one quantity it uses, and
returns a ``Contrib``: that equation's contribution to dJ/d(quantity) as a
formula over the adjoint of the equation's left-hand side, plus the
derivation in index notation, the step from indices to matrices, and the
shape check. The engine (``engine.py``) applies the rules in reverse order.

    rule                   forward               contribution
    softmax_xent           J = -log softmax(z)_y  dJ/dz = ŷ - y
    elementwise            h = f(z)               dJ/dz = dJ/dh ⊙ f'(z)
    product_weight         z = a W + ...          dJ/dW = aᵀ δ
    product_input          z = a W + ...          dJ/da = δ Wᵀ
    plain_term             z = ... + b            dJ/db = δ
    embedding_row          e = x L, x one-hot     dJ/dL_x = dJ/de
"""
from __future__ import annotations

from dataclasses import dataclass, field

from elman.explain import expr as E
from elman.explain import notation as nt
from elman.explain.notation import frac, idx, seq, words

J = nt.M("J", "J")
LOG, EXP = nt.seq(nt.fn("log"), " "), nt.fn("exp")


@dataclass
class Contrib:
    target: str            # the quantity whose gradient this contributes to
    rule: str
    eq: object             # the forward equation differentiated
    expr: object           # the contribution, over adjoints of later quantities
    index: list            # index-notation lines (M)
    notes: list            # paragraphs: lists of str and M
    shapes: list           # the shape check, and what the other products would give
    column: list = field(default_factory=list)   # rule-specific column-convention lines


class Ctx:
    """Names and shapes of one model, as math."""

    def __init__(self, model):
        self.model = model

    def q(self, n):
        return nt.name(n, prev=self.model.prev_of(n))

    def adj(self, n):
        return E.sym_math(E.Sym(n, adj=True), self.model)

    def shape(self, n):
        return nt.shape(self.model.shapes[n])

    def dims(self, n):
        return self.model.shapes[n]

    def render(self, e):
        return E.render(e, self.model)


def _signed(sign, e):
    return e if sign > 0 else E.Neg(e)


def _sign_word(sign):
    return "" if sign > 0 else "−"


def softmax_xent(model, loss_eq, softmax_eq) -> Contrib:
    c = Ctx(model)
    p, y = loss_eq.args
    z = softmax_eq.args[0]
    zj, d = idx(c.q(z), "j"), c.adj(z)
    expr = E.Add(E.Sym(p), E.Neg(E.Sym(y)))
    index = [
        seq(J, " = −", LOG, idx(c.q(p), "y"), " = −", idx(c.q(z), "y"), " + ", LOG, "Σ_k ", EXP, "(",
            idx(c.q(z), "k"), ")"),
        seq(frac(J, zj), " = −[j = y] + ", EXP, "(", zj, ") / Σ_k ", EXP, "(", idx(c.q(z), "k"), ") = ",
            idx(c.q(p), "j"), " − ", idx(c.q(y), "j")),
    ]
    notes = [["Here ", c.q(y), " is the one-hot row of the target word, so the whole row of derivatives is ",
              seq(d, " = ", c.render(expr)), ": the predicted probabilities, minus 1 at the target. "
              "This is the gradient of the loss J; its negative, ", seq(c.q(y), " − ", c.q(p)),
              ", is the gradient of the log-likelihood ", seq(LOG, idx(c.q(p), "y")), "."]]
    shapes = [seq(c.render(expr), ": ", c.shape(p), " − ", c.shape(y), " = ", c.shape(z),
                  ", the shape of ", c.q(z), " ✓")]
    return Contrib(z, "softmax with cross-entropy", loss_eq, expr, index, notes, shapes)


_FPRIME = {
    "sigmoid": (nt.M("σ′(z) = σ(z)(1 − σ(z))", r"\sigma'(z) = \sigma(z)(1-\sigma(z))"),
                lambda h, z: E.Had(h, E.OneMinus(h))),
    "tanh": (nt.M("tanh′(z) = 1 − tanh²(z)", r"\tanh'(z) = 1-\tanh^2(z)"), lambda h, z: E.OneMinus(E.Had(h, h))),
    "relu": (nt.M("relu′(z) = [z > 0]", r"\operatorname{relu}'(z) = [z>0]"), lambda h, z: E.Step(z)),
    "exp": (nt.M("exp′(z) = exp(z)", r"\exp'(z) = \exp(z)"), lambda h, z: h),
}


def fprime(f, h, z):
    """f'(z) as a Deriv node, written with the output h where it can be."""
    return E.Deriv(f, E.Sym(z), _FPRIME[f][1](E.Sym(h), E.Sym(z)))


def elementwise(model, eq) -> Contrib:
    c = Ctx(model)
    h, z, f = eq.lhs, eq.args[0], eq.func
    der = fprime(f, h, z)
    expr = E.Had(E.Sym(h, adj=True), der)
    hk, zj = idx(c.q(h), "k"), idx(c.q(z), "j")
    index = [
        seq(idx(c.q(h), "j"), " = ", nt.fn(f), "(", zj, ")"),
        seq("∂", hk, "/∂", zj, " = ", nt.fn(f), "′(", zj, ")", words(" if k = j, else 0")),
        seq(frac(J, zj), " = Σ_k ", idx(c.adj(h), "k"), " ∂", hk, "/∂", zj, " = ",
            idx(c.adj(h), "j"), " ", nt.fn(f), "′(", zj, ")"),
    ]
    law, _ = _FPRIME[f]
    notes = [["Each ", idx(c.q(h), "k"), " depends on ", idx(c.q(z), "k"), " alone, so the Jacobian ∂",
              c.q(h), "/∂", c.q(z), " is diagonal and the sum over k keeps one term: a row times a "
              "diagonal matrix is an element-wise product (⊙), with no transpose and no matrix product. "
              "Since ", law, ", the factor is ", seq(nt.fn(f), "′(", c.q(z), ") = ", c.render(der)), "."]]
    shapes = [seq(c.render(expr), ": ", c.shape(h), " ⊙ ", c.shape(z), " = ", c.shape(z),
                  ", the shape of ", c.q(z), " ✓")]
    return Contrib(z, f"element-wise {f}", eq, expr, index, notes, shapes)


def product_weight(model, eq, term) -> Contrib:
    c = Ctx(model)
    a, W = term.factors
    z, s = eq.lhs, term.sign
    d = E.Sym(z, adj=True)
    expr = _signed(s, E.MatMul(E.T(E.Sym(a)), d))
    n, m = c.dims(W)
    Wij, ai, dj = idx(c.q(W), "ij"), idx(c.q(a), "i"), idx(c.adj(z), "j")
    zk = idx(c.q(z), "k")
    sw = _sign_word(s)
    index = [
        seq(idx(c.q(z), "j"), " = ", sw, "Σ_i ", ai, " ", Wij, " + ", words(f"(terms without {W})")),
        seq("∂", zk, "/∂", Wij, " = ", sw, ai, words(" if k = j, else 0")),
        seq(frac(J, Wij), " = Σ_k ", idx(c.adj(z), "k"), " ∂", zk, "/∂", Wij, " = ", sw, dj, " ", ai),
    ]
    outer = seq("(", c.q(a), "ᵀ ", c.adj(z), ")_ij = ", ai, " ", dj)
    notes = [[Wij, " touches only ", idx(c.q(z), "j"), ", and only through ", ai,
              ", so the sum over k has a single term: one product per weight. A matrix whose (i, j) entry is ",
              seq(ai, " ", dj), " is the outer product of ", c.q(a), " and ", c.adj(z), ": ", outer,
              ", the column ", seq(c.q(a), "ᵀ (", nt.shape((n, "1")), ")"), " times the row ",
              seq(c.adj(z), " (", nt.shape(("1", m)), ")"), "."],
             ["That is where the transpose comes from: ", c.q(a), " is a row vector, and its index i must run "
              "down the rows of the gradient, as i does in ", Wij, "; the one product of ", c.q(a), " and ",
              c.adj(z), " that puts i on the rows and j on the columns is ", seq(c.q(a), "ᵀ ", c.adj(z)), "."]]
    if model.is_onehot(a):
        notes.append([c.q(a), " is one-hot, so this outer product is zero except row ", c.q(a),
                      " of ", c.q(W), " (see ", f"{W}_{a}", ")."])
    shapes = [seq(c.q(a), "ᵀ ", c.adj(z), ": (", nt.shape((n, "1")), ")(", nt.shape(("1", m)), ") = ",
                  nt.shape((n, m)), ", the shape of ", c.q(W), " ✓"),
              seq(words("   without the transpose, "), c.q(a), " ", c.adj(z), ": (", nt.shape(("1", n)), ")(",
                  nt.shape(("1", m)), words(") does not conform")),
              seq(words("   in the other order, "), c.adj(z), "ᵀ ", c.q(a), ": (", nt.shape((m, "1")), ")(",
                  nt.shape(("1", n)), ") = ", nt.shape((m, n)), words(", the transpose of what is wanted"))]
    Wc, ac, dc = E.Sym(W, col=True), E.Sym(a, col=True), E.Sym(z, adj=True, col=True)
    tW = E.sym_math(Wc, model)
    rest = words(" + ...") if len(eq.terms) > 1 else nt.M("", "")
    column = [
        seq(words("column vectors, "), c.q(W), words(" as it is: "), c.q(z), " = ", sw, c.q(W), "ᵀ ", c.q(a), rest,
            ",   ", idx(c.q(z), "j"), " = ", sw, "Σ_i ", Wij, " ", ai),
        seq("    ", frac(J, c.q(W)), " = ", sw, E.render(E.MatMul(ac, E.T(dc)), model), ": (", nt.shape((n, "1")),
            ")(", nt.shape(("1", m)), ") = ", nt.shape((n, m)), words(", the same matrix as "),
            sw, c.q(a), "ᵀ ", c.adj(z)),
        seq(words("column vectors, "), tW, " = ", c.q(W), "ᵀ (", nt.shape((m, n)), "): ", c.q(z), " = ", sw, tW, " ",
            c.q(a), rest, ",   ", idx(c.q(z), "j"), " = ", sw, "Σ_i ", idx(tW, "ji"), " ", ai),
        seq("    ", frac(J, idx(tW, "ji")), " = ", sw, dj, " ", ai, words(", so "), frac(J, tW), " = ", sw,
            E.render(E.MatMul(dc, E.T(ac)), model), ": (", nt.shape((m, "1")), ")(", nt.shape(("1", n)), ") = ",
            nt.shape((m, n)), words(", the shape of "), tW),
        seq("    ", frac(J, tW), " = ", sw, E.render(E.MatMul(dc, E.T(ac)), model), " = (", c.q(a), "ᵀ ", c.adj(z),
            ")ᵀ = (", frac(J, c.q(W)), ")ᵀ", words(": the row answer, transposed")),
    ]
    return Contrib(W, "product, the matrix on the right", eq, expr, index, notes, shapes, column)


def product_input(model, eq, term) -> Contrib:
    c = Ctx(model)
    a, W = term.factors
    z, s = eq.lhs, term.sign
    expr = _signed(s, E.MatMul(E.Sym(z, adj=True), E.T(E.Sym(W))))
    n, m = c.dims(W)
    Wij, ai, dj = idx(c.q(W), "ij"), idx(c.q(a), "i"), idx(c.adj(z), "j")
    sw = _sign_word(s)
    index = [
        seq(idx(c.q(z), "j"), " = ", sw, "Σ_i ", ai, " ", Wij, " + ", words(f"(terms without {a})")),
        seq("∂", idx(c.q(z), "j"), "/∂", ai, " = ", sw, Wij),
        seq(frac(J, ai), " = Σ_j ", dj, " ∂", idx(c.q(z), "j"), "/∂", ai, " = ", sw, "Σ_j ", dj, " ", Wij,
            " = ", sw, "Σ_j ", dj, " ", idx(seq(c.q(W), "ᵀ"), "ji")),
    ]
    notes = [["Here the sum does not collapse: ", ai, " reaches every ", idx(c.q(z), "j"), " through ", Wij,
              ". A sum over j of ", dj, " ", Wij, " is the row ", c.adj(z), " times a matrix, summed over the "
              "matrix's second index j; a row times a matrix sums over the matrix's first index, so the "
              "matrix is transposed: ", seq(c.render(expr), ", with ", words("entry i "), "Σ_j ", dj, " ",
                                             idx(seq(c.q(W), "ᵀ"), "ji")), "."]]
    shapes = [seq(c.adj(z), " ", c.q(W), "ᵀ: (", nt.shape(("1", m)), ")(", nt.shape((m, n)), ") = ",
                  nt.shape(("1", n)), ", the shape of ", c.q(a), " ✓"),
              seq(words("   in the other order, "), c.q(W), "ᵀ ", c.adj(z), ": (", nt.shape((m, n)), ")(",
                  nt.shape(("1", m)), words(") does not conform"))]
    return Contrib(a, "product, the row vector on the left", eq, expr, index, notes, shapes)


def plain_term(model, eq, term) -> Contrib:
    c = Ctx(model)
    b, z, s = term.factors[0], eq.lhs, term.sign
    expr = _signed(s, E.Sym(z, adj=True))
    sw = _sign_word(s)
    index = [
        seq(idx(c.q(z), "j"), " = … ", "+" if s > 0 else "−", " ", idx(c.q(b), "j")),
        seq("∂", idx(c.q(z), "k"), "/∂", idx(c.q(b), "j"), " = ", sw, "1", words(" if k = j, else 0")),
        seq(frac(J, idx(c.q(b), "j")), " = ", sw, idx(c.adj(z), "j")),
    ]
    notes = [[c.q(b), " enters each ", idx(c.q(z), "j"), " once, with coefficient ", sw or "", "1, so its "
              "gradient is ", c.render(expr), " itself. (With a batch of rows, the rows of ",
              c.adj(z), " are summed: the bias is shared by every row.)"]]
    shapes = [seq(c.render(expr), ": ", c.shape(z), ", the shape of ", c.q(b), " ✓")]
    return Contrib(b, "sum: a bias or a term added", eq, expr, index, notes, shapes)


def embedding_row(model, eq, term) -> Contrib:
    c = Ctx(model)
    x, L = term.factors
    e = eq.lhs
    expr = E.Sym(e, adj=True)
    Lvj = idx(c.q(L), "vj")
    index = [
        seq(idx(c.q(x), "v"), " = [v = x]   ", words(f"({x} is one-hot)")),
        seq(idx(c.q(e), "j"), " = Σ_v ", idx(c.q(x), "v"), " ", Lvj, " = ", idx(c.q(L), "xj"),
            "   ", words(f"(row x of {L})")),
        seq(frac(J, Lvj), " = ", idx(c.q(x), "v"), " ", idx(c.adj(e), "j"),
            " = ", idx(c.adj(e), "j"), words(" for v = x, 0 for every other row")),
    ]
    notes = [["This is the product rule with the one-hot column ", seq(c.q(x), "ᵀ"), ": ",
              seq(frac(J, c.q(L)), " = ", c.q(x), "ᵀ ", c.adj(e)), " is zero except row x, which is ",
              c.adj(e), ". So the gradient of the looked-up row is ",
              seq(frac(J, nt.name(f"{L}_{x}")), " = ", c.adj(e)),
              ", and a sequence adds, into each word's row, dJ/de of every position where that word occurs."]]
    d = c.dims(L)[1]
    shapes = [seq(c.adj(e), ": ", nt.shape(("1", d)), ", the shape of a row of ", c.q(L), " ✓")]
    return Contrib(f"{L}_{x}", "embedding lookup (one-hot product)", eq, expr, index, notes, shapes)


def fan_out(model, name, contribs) -> list:
    """Paragraph for a quantity used by several equations."""
    c = Ctx(model)
    parts = [c.q(name), f" is used by {len(contribs)} equations (lines ",
             ", ".join(str(k.eq.line) for k in contribs), "); the multivariate chain rule adds their "
             "contributions: ", seq(frac(J, c.q(name)), " = "),
             nt.join([c.render(k.expr) for k in contribs], " + "), "."]
    return parts
