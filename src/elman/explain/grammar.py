"""The equation language's tokens and expression grammar.

    expr    := ['-'] term (('+' | '-') term)*
    term    := product (('*' | '⊙') product)*          element-wise product, or a number times
    product := factor (['@'] factor)*                  matrix product by juxtaposition or @
    factor  := '(' expr ')' | number | name ['.T' | 'ᵀ'] | function '(' expr (',' expr)* ')'

The element-wise product binds more loosely than the matrix product, as in
the papers: ``z * h_prev U`` is z ⊙ (h_prev U). Expression nodes are tuples:
("name", n) ("num", c) ("T", n) ("call", f, [args]) ("mul", a, b)
("had", a, b) ("scale", c, a) ("sum", [(sign, node)]). ``equations.py``
reads statements with these and ``flatten.py`` turns the nodes into
equations of one operation each.
"""
from __future__ import annotations

import re

from elman.errors import ElmanError

ELEMENTWISE = ("sigmoid", "tanh", "relu", "exp")
FUNCTIONS = ELEMENTWISE + ("softmax", "cross_entropy")


class ModelError(ElmanError):
    """A problem in a model file, worded as ``file:line: message``."""


_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                    r"|(?P<op><-|\.T(?![A-Za-z0-9_])|[=+\-@(),:;×*⊙ᵀ]))")


def tokens(text, where):
    """(kind, text, column) for each token of one statement."""
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ModelError(f"{where}: unexpected character {text[pos:].strip()[0]!r}")
        kind = m.lastgroup
        out.append((kind, m[kind], m.start(kind)))
        pos = m.end()
    return out


class Parser:
    """Recursive descent over one statement's tokens."""

    def __init__(self, toks, where):
        self.toks, self.i, self.where = toks, 0, where

    def peek(self, k=0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else ("end", "", -1)

    def take(self, value=None, kind=None):
        tok = self.peek()
        if (value is not None and tok[1] != value) or (kind is not None and tok[0] != kind):
            want = f"`{value}`" if value else f"a {kind}"
            got = f"`{tok[1]}`" if tok[0] != "end" else "the end of the line"
            raise ModelError(f"{self.where}: expected {want}, found {got}")
        self.i += 1
        return tok

    def expr(self):
        terms = []
        sign = -1 if self.peek()[1] == "-" and self.take() else 1
        terms.append((sign, self.term()))
        while self.peek()[1] in ("+", "-"):
            sign = 1 if self.take()[1] == "+" else -1
            terms.append((sign, self.term()))
        return terms[0][1] if len(terms) == 1 and terms[0][0] == 1 else ("sum", terms)

    def term(self):
        node = self.product()
        while self.peek()[1] in ("*", "⊙"):
            self.take()
            node = _times(node, self.product(), self.where)
        return node

    def product(self):
        node = self.factor()
        while self.peek()[1] in ("@", "(") or self.peek()[0] in ("name", "num"):
            if self.peek()[1] == "@":
                self.take()
            right = self.factor()
            if "num" in (node[0], right[0]):
                c = node[1] if node[0] == "num" else right[1]
                raise ModelError(f"{self.where}: a number multiplies with `*`, not by juxtaposition "
                                 f"(write {c:g} * ...)")
            node = ("mul", node, right)
        return node

    def factor(self):
        kind, value, col = self.peek()
        if value == "(":
            self.take()
            node = self.expr()
            self.take(")")
            return node
        if kind == "num":
            self.take()
            return ("num", float(value))
        self.take(kind="name")
        nxt = self.peek()
        if nxt[1] == "(" and nxt[2] == col + len(value):     # f(...) with no space: a call
            return self.call(value)
        if value in FUNCTIONS:
            raise ModelError(f"{self.where}: `{value}` is a function: write {value}(...)")
        if nxt[1] in (".T", "ᵀ"):
            self.take()
            return ("T", value)
        return ("name", value)

    def call(self, f):
        if f not in FUNCTIONS:
            raise ModelError(f"{self.where}: unknown function `{f}` (known: {', '.join(FUNCTIONS)})")
        self.take("(")
        args = [self.expr()]
        while self.peek()[1] == ",":
            self.take()
            args.append(self.expr())
        self.take(")")
        return ("call", f, args)


def _times(a, b, where):
    """a * b: a number times anything is a scaling, two numbers fold."""
    if a[0] == "num" and b[0] == "num":
        return ("num", a[1] * b[1])
    if a[0] == "num" or b[0] == "num":
        c, other = (a[1], b) if a[0] == "num" else (b[1], a)
        return ("scale", c, other)
    return ("had", a, b)


def shape(p, dims):
    """``Dh x V``, ``Dh×V``, ``Dh`` (a 1×Dh row) or ``onehot(V)``."""
    onehot = p.peek()[1] == "onehot"
    if onehot:
        p.take(), p.take("(")
    parts = [p.take()[1]]
    while p.peek()[1] in ("x", "×"):
        p.take()
        parts.append(p.take()[1])
    if onehot:
        p.take(")")
    for d in parts:
        if not d.isdigit() and d not in dims:
            raise ModelError(f"{p.where}: size `{d}` is not a declared dim (declare it: dim {d} = 4)")
    if len(parts) > 2 or (onehot and len(parts) != 1):
        raise ModelError(f"{p.where}: a shape is `n`, `m x n` or `onehot(n)`")
    return (("1",) + tuple(parts) if len(parts) == 1 else tuple(parts)), onehot


def names_in(node):
    """Every name an expression node mentions."""
    if node[0] in ("name", "T"):
        return {node[1]}
    if node[0] == "num":
        return set()
    if node[0] == "call":
        return set().union(*(names_in(a) for a in node[2]))
    if node[0] in ("mul", "had"):
        return names_in(node[1]) | names_in(node[2])
    if node[0] == "scale":
        return names_in(node[2])
    return set().union(*(names_in(t) for _, t in node[1]))
