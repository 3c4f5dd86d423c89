"""A forward equation written as math: h = sigmoid(z1), z2 = h U + b2,
J = −log ŷ_y. The explanation and the checker's hints both quote equations
this way.
"""
from __future__ import annotations

from elman.explain import expr as E
from elman.explain import notation as nt
from elman.explain.contrib import LOG, J


def equation_math(model, eq, timed=False) -> nt.M:
    r = lambda e: E.render(e, model, timed)  # noqa: E731
    lhs = r(E.Sym(eq.lhs))
    if eq.kind == "loss":
        return nt.seq(J, "(t)" if timed else "", " = −", LOG, nt.idx(r(E.Sym(eq.args[0])), "y"))
    if eq.kind == "func":
        return nt.seq(lhs, " = ", nt.fn(eq.func), "(", r(E.Sym(eq.args[0])), ")")
    out = nt.seq(lhs, " = ")
    for i, t in enumerate(eq.terms):
        term = term_math(t, r)
        out = nt.seq(out, ("−" if t.sign < 0 else "") if i == 0 else (" − " if t.sign < 0 else " + "), term)
    return out


def term_math(t, r) -> nt.M:
    """One term of a sum as written, without its sign: 0.5 a W, a Wᵀ, a ⊙ b, 1."""
    if t.op == "const":
        return E.number(t.coef)
    syms = [r(E.Sym(f)) for f in t.factors]
    body = {"mul": lambda: nt.seq(syms[0], " ", syms[1]), "mulT": lambda: nt.seq(syms[0], " ", syms[1], "ᵀ"),
            "had": lambda: nt.seq(syms[0], " ⊙ ", syms[1]), "plain": lambda: syms[0]}[t.op]()
    return body if t.coef == 1 else nt.seq(E.number(t.coef), " ", body)
