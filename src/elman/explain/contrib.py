"""What every rule hands back, and the names it writes with.

``Contrib`` is one equation's contribution to one gradient; ``Ctx`` names a
model's quantities and shapes as math; ``signed`` and ``sign_word`` carry a
term's sign and coefficient. The rules (``rules.py``, ``products.py``) and
the explanation built from them share these.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from elman.explain import expr as E
from elman.explain import notation as nt

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
    via: str = ""          # a product's left factor (a lookup's one-hot input)
    term: object = None    # the term of ``eq`` differentiated


class Ctx:
    """Names and shapes of one model, as math."""

    def __init__(self, model):
        self.model = model

    def q(self, n):
        if n in self.model.lookups:
            W, x = (nt.name(k) for k in self.model.lookups[n])
            base = W.tex if len(W.tex) == 1 else "{" + W.tex + "}"
            return nt.M(f"{W.text}_{x.text}", base + "_{" + x.tex + "}")
        return nt.name(n, prev=self.model.prev_of(n))

    def adj(self, n):
        return E.sym_math(E.Sym(n, adj=True), self.model)

    def shape(self, n):
        return nt.shape(self.model.row_shape(n))

    def dims(self, n):
        return self.model.row_shape(n)

    def render(self, e):
        return E.render(e, self.model)


def signed(term, e):
    """A term's sign and coefficient applied to a contribution."""
    e = e if term.coef == 1 else E.Scale(term.coef, e)
    return e if term.sign > 0 else E.Neg(e)


def sign_word(term):
    """How a term's factor reads in index notation: "", "−", "0.5 ", "−2 "."""
    c = "" if term.coef == 1 else E.number(term.coef).text + " "
    return ("" if term.sign > 0 else "−") + c
