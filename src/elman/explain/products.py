"""The chain rule through a matrix product, and the rows a lookup reads.

    z = a W + ...     dJ/dW = aᵀ δ      dJ/da = δ Wᵀ
    z = a Wᵀ + ...    dJ/dW = δᵀ a      dJ/da = δ W
    e = x L           dJ/dL_x = dJ/de   (x one-hot: row x of xᵀ dJ/de)

A row of a matrix read by a lookup has a gradient of its own, row x of the
matrix's whole gradient: the lookup's dJ/de, plus what every other use of
the matrix adds to that row (a second lookup of the same word, a tied
output layer).
"""
from __future__ import annotations

from elman.explain import expr as E
from elman.explain import notation as nt
from elman.explain.notation import frac, idx, seq, words
from elman.explain.contrib import J, Contrib, Ctx, sign_word, signed


def product_weight(model, eq, term) -> Contrib:
    c = Ctx(model)
    a, W = term.factors
    z, sw = eq.lhs, sign_word(term)
    expr = signed(term, E.MatMul(E.T(E.Sym(a)), E.Sym(z, adj=True)))
    n, m = c.dims(W)
    Wij, ai, dj = idx(c.q(W), "ij"), idx(c.q(a), "i"), idx(c.adj(z), "j")
    zk = idx(c.q(z), "k")
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
    return Contrib(W, "product, the matrix on the right", eq, expr, index, notes, shapes,
                   _weight_column(model, eq, term), via=a, term=term)


def _weight_column(model, eq, term):
    """The same gradient for column vectors, W kept and W written W̃ = Wᵀ."""
    c = Ctx(model)
    a, W = term.factors
    z, sw = eq.lhs, sign_word(term)
    n, m = c.dims(W)
    Wij, ai, dj = idx(c.q(W), "ij"), idx(c.q(a), "i"), idx(c.adj(z), "j")
    Wc, ac, dc = E.Sym(W, col=True), E.Sym(a, col=True), E.Sym(z, adj=True, col=True)
    tW = E.sym_math(Wc, model)
    rest = words(" + ...") if len(eq.terms) > 1 else nt.M("", "")
    outer = E.render(E.MatMul(dc, E.T(ac)), model)
    return [
        seq(words("column vectors, "), c.q(W), words(" as it is: "), c.q(z), " = ", sw, c.q(W), "ᵀ ", c.q(a), rest,
            ",   ", idx(c.q(z), "j"), " = ", sw, "Σ_i ", Wij, " ", ai),
        seq("    ", frac(J, c.q(W)), " = ", sw, E.render(E.MatMul(ac, E.T(dc)), model), ": (", nt.shape((n, "1")),
            ")(", nt.shape(("1", m)), ") = ", nt.shape((n, m)), words(", the same matrix as "),
            sw, c.q(a), "ᵀ ", c.adj(z)),
        seq(words("column vectors, "), tW, " = ", c.q(W), "ᵀ (", nt.shape((m, n)), "): ", c.q(z), " = ", sw, tW, " ",
            c.q(a), rest, ",   ", idx(c.q(z), "j"), " = ", sw, "Σ_i ", idx(tW, "ji"), " ", ai),
        seq("    ", frac(J, idx(tW, "ji")), " = ", sw, dj, " ", ai, words(", so "), frac(J, tW), " = ", sw,
            outer, ": (", nt.shape((m, "1")), ")(", nt.shape(("1", n)), ") = ", nt.shape((m, n)),
            words(", the shape of "), tW),
        seq("    ", frac(J, tW), " = ", sw, outer, " = (", c.q(a), "ᵀ ", c.adj(z),
            ")ᵀ = (", frac(J, c.q(W)), ")ᵀ", words(": the row answer, transposed")),
    ]


def product_input(model, eq, term) -> Contrib:
    c = Ctx(model)
    a, W = term.factors
    z, sw = eq.lhs, sign_word(term)
    expr = signed(term, E.MatMul(E.Sym(z, adj=True), E.T(E.Sym(W))))
    n, m = c.dims(W)
    Wij, ai, dj = idx(c.q(W), "ij"), idx(c.q(a), "i"), idx(c.adj(z), "j")
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
    return Contrib(a, "product, the row vector on the left", eq, expr, index, notes, shapes, via=W, term=term)


def product_weight_t(model, eq, term) -> Contrib:
    """z = a Wᵀ: the transposed outer product δᵀ a."""
    c = Ctx(model)
    a, W = term.factors
    z, sw = eq.lhs, sign_word(term)
    expr = signed(term, E.MatMul(E.T(E.Sym(z, adj=True)), E.Sym(a)))
    m, n = c.dims(W)                      # W is m×n, a is 1×n, z is 1×m
    Wji, ai, dj = idx(c.q(W), "ji"), idx(c.q(a), "i"), idx(c.adj(z), "j")
    zk = idx(c.q(z), "k")
    index = [
        seq(idx(c.q(z), "j"), " = ", sw, "Σ_i ", ai, " ", idx(seq(c.q(W), "ᵀ"), "ij"), " = ", sw, "Σ_i ", ai,
            " ", Wji, " + ", words(f"(terms without {W})")),
        seq("∂", zk, "/∂", Wji, " = ", sw, ai, words(" if k = j, else 0")),
        seq(frac(J, Wji), " = Σ_k ", idx(c.adj(z), "k"), " ∂", zk, "/∂", Wji, " = ", sw, dj, " ", ai),
    ]
    outer = seq("(", c.adj(z), "ᵀ ", c.q(a), ")_ji = ", dj, " ", ai)
    notes = [[Wji, " touches only ", idx(c.q(z), "j"), ", through ", ai, ". Now j, the index of ", c.q(z),
              ", runs down the rows of ", c.q(W), " and i along its columns, so the matrix of entries ",
              seq(dj, " ", ai), " is the outer product the other way round: ", outer, ", the column ",
              seq(c.adj(z), "ᵀ (", nt.shape((m, "1")), ")"), " times the row ",
              seq(c.q(a), " (", nt.shape(("1", n)), ")"), "."],
             ["Transposing the matrix on the way forward transposes its gradient: for ",
              seq(c.q(z), " = ", c.q(a), " ", c.q(W), "ᵀ"), " the product rule gives the gradient of ",
              seq(c.q(W), "ᵀ"), ", ", seq(c.q(a), "ᵀ ", c.adj(z)), ", and ",
              seq("(", c.q(a), "ᵀ ", c.adj(z), ")ᵀ = ", c.adj(z), "ᵀ ", c.q(a)), " is the gradient of ",
              c.q(W), " itself. A matrix used both as it is and transposed (a tied embedding) gets one such "
              "term from each use, both of its shape, and they add."]]
    shapes = [seq(c.adj(z), "ᵀ ", c.q(a), ": (", nt.shape((m, "1")), ")(", nt.shape(("1", n)), ") = ",
                  nt.shape((m, n)), ", the shape of ", c.q(W), " ✓"),
              seq(words("   the untransposed rule, "), c.q(a), "ᵀ ", c.adj(z), ": (", nt.shape((n, "1")), ")(",
                  nt.shape(("1", m)), ") = ", nt.shape((n, m)), words(", the shape of "), c.q(W), "ᵀ",
                  words(", not of "), c.q(W))]
    return Contrib(W, "product, a transposed matrix on the right", eq, expr, index, notes, shapes, via=a,
                   term=term)


def product_input_t(model, eq, term) -> Contrib:
    """z = a Wᵀ: dJ/da = δ W, the two transposes cancel."""
    c = Ctx(model)
    a, W = term.factors
    z, sw = eq.lhs, sign_word(term)
    expr = signed(term, E.MatMul(E.Sym(z, adj=True), E.Sym(W)))
    m, n = c.dims(W)
    Wji, ai, dj = idx(c.q(W), "ji"), idx(c.q(a), "i"), idx(c.adj(z), "j")
    index = [
        seq(idx(c.q(z), "j"), " = ", sw, "Σ_i ", ai, " ", Wji, " + ", words(f"(terms without {a})")),
        seq("∂", idx(c.q(z), "j"), "/∂", ai, " = ", sw, Wji),
        seq(frac(J, ai), " = Σ_j ", dj, " ∂", idx(c.q(z), "j"), "/∂", ai, " = ", sw, "Σ_j ", dj, " ", Wji),
    ]
    notes = [["The sum over j runs down the first index of ", c.q(W), ", which is what a row times a matrix "
              "does: ", seq(c.render(expr)), ". The transpose in the forward product and the one the product "
              "rule brings (", seq(c.adj(z), " (", c.q(W), "ᵀ)ᵀ"), ") cancel."]]
    shapes = [seq(c.adj(z), " ", c.q(W), ": (", nt.shape(("1", m)), ")(", nt.shape((m, n)), ") = ",
                  nt.shape(("1", n)), ", the shape of ", c.q(a), " ✓"),
              seq(words("   with a transpose, "), c.adj(z), " ", c.q(W), "ᵀ: (", nt.shape(("1", m)), ")(",
                  nt.shape((n, m)), words(") does not conform")),]
    return Contrib(a, "product, the row on the left of a transposed matrix", eq, expr, index, notes, shapes,
                   via=W, term=term)


# ------------------------------------------------------------------ rows

def lookup_rows(model, row, contribs) -> list:
    """The contributions to row x of L, one per contribution to L."""
    W, x = model.lookups[row]
    return [embedding_row(model, k, row) if k.via == x and k.term.op == "mul" else row_of(model, k, row)
            for k in contribs]


def embedding_row(model, k, row) -> Contrib:
    c = Ctx(model)
    L, x = model.lookups[row]
    e = k.eq.lhs
    expr = signed(k.term, E.Sym(e, adj=True))
    Lvj, sw, xv = idx(c.q(L), "vj"), sign_word(k.term), c.q(x).text
    index = [
        seq(idx(c.q(x), "v"), f" = [v = {xv}]   ", words(f"({x} is one-hot)")),
        seq(idx(c.q(e), "j"), " = ", sw, "Σ_v ", idx(c.q(x), "v"), " ", Lvj, " = ", sw, idx(c.q(L), f"{xv}j"),
            "   ", words(f"(row {xv} of {L})")),
        seq(frac(J, Lvj), " = ", sw, idx(c.q(x), "v"), " ", idx(c.adj(e), "j"),
            " = ", sw, idx(c.adj(e), "j"), words(f" for v = {xv}, 0 for every other row")),
    ]
    notes = [["This is the product rule with the one-hot column ", seq(c.q(x), "ᵀ"), ": ",
              seq(frac(J, c.q(L)), " = ", c.render(k.expr)), f" is zero except row {xv}, which is ",
              c.render(expr), ". So the gradient of the looked-up row is ",
              seq(frac(J, c.q(row)), " = ", c.render(expr)),
              ", and a sequence adds, into each word's row, dJ/de of every position where that word occurs."]]
    shapes = [seq(c.render(expr), ": ", nt.shape(("1", c.dims(L)[1])), ", the shape of a row of ", c.q(L), " ✓")]
    return Contrib(row, "embedding lookup (one-hot product)", k.eq, expr, index, notes, shapes, via=x, term=k.term)


def row_of(model, k, row) -> Contrib:
    """Row x of another use's contribution to L: x · (that contribution)."""
    c = Ctx(model)
    L, x = model.lookups[row]
    expr = E.MatMul(E.Sym(x), k.expr)
    d = c.dims(L)[1]
    other = model.is_onehot(k.via) and k.term.op == "mul"
    xv = c.q(x).text
    index = [seq(frac(J, c.q(row)), " ∋ ", words(f"row {xv} of "), c.render(k.expr), " = ", c.render(expr))]
    if other:
        what = [c.q(k.via), " looks up a row of ", c.q(L), " too (line ", str(k.eq.line), "). ",
                seq(c.q(x), " ", c.q(k.via), "ᵀ"), " is 1 when the two words are the same and 0 otherwise, so "
                "this term is ", c.adj(k.eq.lhs), f" when both read row {xv} and nothing when they differ: the "
                "two reads of one row add."]
    else:
        what = [c.q(L), " is also used on line ", str(k.eq.line), " (", k.rule, "), and that use adds ",
                c.render(k.expr), " to the whole matrix; the one-hot row ", c.q(x),
                f" times it picks out row {xv}, the part that lands on the looked-up row."]
    notes = [what]
    shapes = [seq(c.render(expr), ": (", nt.shape(("1", c.dims(L)[0])), ")(", nt.shape(c.dims(L)), ") = ",
                  nt.shape(("1", d)), ", the shape of a row of ", c.q(L), " ✓")]
    return Contrib(row, "the looked-up row, from another use", k.eq, expr, index, notes, shapes, via=k.via,
                   term=k.term)
