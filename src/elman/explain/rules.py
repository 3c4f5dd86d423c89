"""The chain rule, one kind of equation at a time.

Each rule looks at one forward equation and one quantity it uses, and
returns a ``Contrib``: that equation's contribution to dJ/d(quantity) as a
formula over the adjoint of the equation's left-hand side, plus the
derivation in index notation, the step from indices to matrices, and the
shape check. The engine (``engine.py``) applies the rules in reverse order;
``contributions`` says which rules an equation calls for.

    rule                   forward               contribution
    softmax_xent           J = -log softmax(z)_y  dJ/dz = ŷ - y
    elementwise            h = f(z)               dJ/dz = dJ/dh ⊙ f'(z)
    hadamard               z = a ⊙ b + ...        dJ/da = δ ⊙ b
    plain_term             z = ... ± c b (+ 1)    dJ/db = ± c δ
    product_weight         z = a W + ...          dJ/dW = aᵀ δ          (products.py)
    product_input          z = a W + ...          dJ/da = δ Wᵀ
    product_weight_t       z = a Wᵀ + ...         dJ/dW = δᵀ a
    product_input_t        z = a Wᵀ + ...         dJ/da = δ W
    embedding_row          e = x L, x one-hot     dJ/dL_x = dJ/de
    row_of                 any other use of L     dJ/dL_x += x (that use's dJ/dL)
"""
from __future__ import annotations

from elman.explain import expr as E
from elman.explain import notation as nt
from elman.explain import products as P
from elman.explain.contrib import EXP, LOG, J, Contrib, Ctx, sign_word, signed
from elman.explain.notation import frac, idx, seq, words

def contributions(model, eq) -> list:
    """What one equation hands back to each quantity it uses (none to a
    number, nor to a one-hot input: that is data, its matrix learns)."""
    if eq.kind == "func":
        return [elementwise(model, eq)]
    out = []
    for term in eq.terms:
        if term.op == "had":
            a, b = term.factors
            out += [hadamard(model, eq, term, a, b), hadamard(model, eq, term, b, a)]
        elif term.op in ("mul", "mulT"):
            t = term.op == "mulT"
            out.append((P.product_weight_t if t else P.product_weight)(model, eq, term))
            if not model.is_onehot(term.factors[0]):
                out.append((P.product_input_t if t else P.product_input)(model, eq, term))
        elif term.op == "plain" and not model.is_onehot(term.factors[0]):
            out.append(plain_term(model, eq, term))
    return out


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


def _const_text(eq):
    """The numbers added in an equation, as written: "1", "1 + 0.5"."""
    cs = [t for t in eq.terms if t.op == "const"]
    return nt.join([E.number(-t.coef if t.sign < 0 else t.coef) for t in cs], " + ") if cs else None


def plain_term(model, eq, term) -> Contrib:
    c = Ctx(model)
    b, z = term.factors[0], eq.lhs
    expr = signed(term, E.Sym(z, adj=True))
    sw, const = sign_word(term), _const_text(eq)
    coef = sw.lstrip("−")
    lead = (seq(const, " ") if const is not None and len(eq.terms) == 2 else nt.M("… ", r"\ldots "))
    index = [
        seq(idx(c.q(z), "j"), " = ", lead, "+ " if term.sign > 0 else "− ", coef, idx(c.q(b), "j")),
        seq("∂", idx(c.q(z), "k"), "/∂", idx(c.q(b), "j"), " = ", sw.rstrip() if coef else sw + "1",
            words(" if k = j, else 0")),
        seq(frac(J, idx(c.q(b), "j")), " = ", sw, idx(c.adj(z), "j")),
    ]
    notes = [[c.q(b), " enters each ", idx(c.q(z), "j"), " once, with coefficient ", sw or "", "1, so its "
              "gradient is ", c.render(expr), "."]]
    if b in model.params:
        notes[0] += [" (With a batch of rows, the rows of ", c.adj(z), " are summed: a bias is shared by every row.)"]
    if const is not None:
        notes.append(["The number ", const, " in ", c.q(z), " depends on nothing: its derivative is 0 and it "
                      "leaves no trace in any gradient. What remains is the sign", " and the coefficient"
                      if coef else "", " of ", c.q(b), ": ", seq(frac(J, c.q(b)), " = ", c.render(expr)),
                      ". This is where the minus sign of a gate's (1 − z) comes from."
                      if term.sign < 0 else "."])
    shapes = [seq(c.render(expr), ": ", c.shape(z), ", the shape of ", c.q(b), " ✓")]
    return Contrib(b, "sum: a term added", eq, expr, index, notes, shapes, term=term)


def hadamard(model, eq, term, a, b) -> Contrib:
    """z = a ⊙ b (+ ...): dJ/da = δ ⊙ b, a diagonal Jacobian."""
    c = Ctx(model)
    z, sw = eq.lhs, sign_word(term)
    expr = signed(term, E.Had(E.Sym(z, adj=True), E.Sym(b)))
    zk, aj, bj, dj = idx(c.q(z), "k"), idx(c.q(a), "j"), idx(c.q(b), "j"), idx(c.adj(z), "j")
    pair = (c.q(a), c.q(b)) if term.factors == (a, b) else (c.q(b), c.q(a))
    index = [
        seq(zk, " = ", sw, idx(pair[0], "k"), " ", idx(pair[1], "k"), " + ", words("(terms without this product)")),
        seq("∂", zk, "/∂", aj, " = ", sw, bj, words(" if k = j, else 0")),
        seq(frac(J, aj), " = Σ_k ", idx(c.adj(z), "k"), " ∂", zk, "/∂", aj, " = ", sw, dj, " ", bj),
    ]
    n = c.dims(a)[1]
    diag = seq("diag(", c.q(b), ")")
    notes = [["Entry j of ", c.q(a), " meets only entry j of ", c.q(b), " and reaches only ", idx(c.q(z), "j"),
              ", so the Jacobian ∂", c.q(z), "/∂", c.q(a), " is the diagonal matrix ", sw, diag,
              " and the sum over k keeps one term. A row times a diagonal matrix multiplies entry by entry: ",
              seq(c.adj(z), " ", diag, " = ", c.adj(z), " ⊙ ", c.q(b)), ". It is not a matrix product with ",
              c.q(b), ": nothing is summed, nothing is transposed, and the result keeps the shape of ",
              c.q(a), "."]]
    if a == b:
        notes.append([c.q(a), " is both factors here, so this rule contributes twice, once for each; the "
                      "two contributions are summed."])
    shapes = [seq(c.render(expr), ": (", nt.shape(("1", n)), ") ⊙ (", nt.shape(("1", n)), ") = ",
                  nt.shape(("1", n)), ", the shape of ", c.q(a), " ✓"),
              seq(words("   as a matrix product, "), c.adj(z), " ", diag, ": (", nt.shape(("1", n)), ")(",
                  nt.shape((n, n)), ") = ", nt.shape(("1", n)), words(", the same numbers")),
              seq(words("   not "), c.adj(z), " ", c.q(b), "ᵀ: (", nt.shape(("1", n)), ")(", nt.shape((n, "1")),
                  ") = 1×1", words(", a single number"))]
    return Contrib(a, "element-wise (Hadamard) product", eq, expr, index, notes, shapes, via=b, term=term)


def fan_out(model, name, contribs) -> list:
    """Paragraph for a quantity used in several places: the terms are summed."""
    c = Ctx(model)
    total = None
    for k in contribs:
        total = E.add(total, k.expr)
    where = [f"on line {k.eq.line} ({k.rule})" for k in contribs]
    where = ", ".join(where[:-1]) + " and " + where[-1]
    row = name in model.lookups
    return [c.q(name), (f" receives {len(contribs)} contributions: " if row else
                        f" is used in {len(contribs)} places: "), f"{where}. ",
            "Each place is a path from it to J; the multivariate chain rule adds the paths, one term each: ",
            seq(frac(J, c.q(name)), " = "), c.render(total), "."]
