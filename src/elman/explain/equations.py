"""The equation language: a model's forward pass, one equation a line.

    # the MLP of the issue
    dim D = 4, Dh = 3, V = 5
    input  x  : 1 x D            # a row vector (every vector is a 1×n row)
    target y  : onehot(V)        # a one-hot row; inputs may be one-hot too
    param  W1 : D x Dh
    param  b1 : Dh               # same as 1 x Dh
    param  W2 : Dh x V
    param  b2 : V
    h    = relu(x W1 + b1)
    yhat = softmax(h W2 + b2)
    J    = cross_entropy(yhat, y)

Products are written by juxtaposition (``h U``) or ``@``; ``+`` and ``-``
add terms; functions are sigmoid, tanh, relu, exp (element-wise) and
softmax (only as the input of cross_entropy). ``recur h_prev <- h`` says
that the input h_prev of step t+1 is h of step t (a recurrent network).
Statements end at a newline or ``;``.

Nested expressions are flattened into one operation per equation: the
argument of a function becomes z1, z2, ... in order (the seed's names:
z1 = h(t-1)H + eI + b1, z2 = hU + b2), any other inner expression t1, t2...
Errors name the file, the line and the symbol.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from elman.errors import ElmanError

ELEMENTWISE = ("sigmoid", "tanh", "relu", "exp")
FUNCTIONS = ELEMENTWISE + ("softmax", "cross_entropy")
KEYWORDS = ("dim", "input", "target", "param", "recur")
MODELS_DIR = Path(__file__).parent / "models"


class ModelError(ElmanError):
    """A problem in a model file, worded as ``file:line: message``."""


@dataclass(frozen=True)
class Decl:
    name: str
    role: str            # input | target | param
    shape: tuple         # (rows, cols) as dim names or digit strings
    onehot: bool
    line: int


@dataclass(frozen=True)
class Term:
    """sign · a W (a product) or sign · v (a plain term such as a bias)."""
    sign: int
    factors: tuple


@dataclass(frozen=True)
class Equation:
    lhs: str
    kind: str            # affine | func | loss
    line: int
    source: str
    terms: tuple = ()
    func: str = ""
    args: tuple = ()

    def uses(self):
        if self.kind == "affine":
            return [f for t in self.terms for f in t.factors]
        return list(self.args)


@dataclass
class Model:
    name: str
    path: str
    dims: dict
    decls: dict
    equations: list
    shapes: dict                     # every name -> (rows, cols)
    recur: dict = field(default_factory=dict)   # input name -> state it reads, e.g. h_prev -> h
    loss: str = "J"

    @property
    def params(self):
        return [n for n, d in self.decls.items() if d.role == "param"]

    def is_onehot(self, n) -> bool:
        return n in self.decls and self.decls[n].onehot

    def definition(self, n):
        return next((eq for eq in self.equations if eq.lhs == n), None)

    def prev_of(self, n):
        """The state a recurrent input stands for one step back (h_prev -> h)."""
        return self.recur.get(n)


# ------------------------------------------------------------------ tokens

_TOKEN = re.compile(r"\s*(?:(?P<num>\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op><-|[=+\-@(),:;×]))")


def _tokens(text, where):
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


class _Parser:
    """Recursive descent over one statement's tokens. Expression nodes are
    tuples: ("name", n) ("call", f, [args]) ("mul", a, b) ("sum", [(sign, node)])."""

    def __init__(self, tokens, where):
        self.toks, self.i, self.where = tokens, 0, where

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
        node = self.factor()
        while self.peek()[1] == "@" or self.peek()[0] == "name" or self.peek()[1] == "(":
            if self.peek()[1] == "@":
                self.take()
            node = ("mul", node, self.factor())
        return node

    def factor(self):
        kind, value, col = self.peek()
        if value == "(":
            self.take()
            node = self.expr()
            self.take(")")
            return node
        self.take(kind="name")
        nxt = self.peek()
        if nxt[1] == "(" and nxt[2] == col + len(value):     # f(...) with no space: a call
            if value not in FUNCTIONS:
                raise ModelError(f"{self.where}: unknown function `{value}` "
                                 f"(known: {', '.join(FUNCTIONS)})")
            self.take("(")
            args = [self.expr()]
            while self.peek()[1] == ",":
                self.take()
                args.append(self.expr())
            self.take(")")
            return ("call", value, args)
        if value in FUNCTIONS:
            raise ModelError(f"{self.where}: `{value}` is a function: write {value}(...)")
        return ("name", value)


def _shape(p, dims):
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


# ------------------------------------------------------------- the reader

def parse(text: str, path: str = "<model>") -> Model:
    """Read a model file's text into a checked ``Model``."""
    stem = Path(path).stem
    dims, decls, raw, recur = {}, {}, [], {}
    for lineno, line in enumerate(text.splitlines(), 1):
        for stmt in line.split("#", 1)[0].split(";"):
            where = f"{path}:{lineno}"
            toks = _tokens(stmt, where)
            if not toks:
                continue
            p = _Parser(toks, where)
            head = toks[0][1]
            if head in KEYWORDS and len(toks) > 1 and toks[1][1] != "=":
                p.take()
                if head == "dim":
                    while True:
                        n = p.take(kind="name")[1]
                        p.take("=")
                        dims[n] = int(p.take(kind="num")[1])
                        if p.peek()[1] != ",":
                            break
                        p.take()
                elif head == "recur":
                    inp = p.take(kind="name")[1]
                    p.take("<-")
                    recur[inp] = (p.take(kind="name")[1], lineno)
                else:
                    names = [p.take(kind="name")[1]]
                    while p.peek()[1] == ",":
                        p.take()
                        names.append(p.take(kind="name")[1])
                    p.take(":")
                    shp, onehot = _shape(p, dims)
                    for n in names:
                        if n in decls:
                            raise ModelError(f"{where}: `{n}` is declared twice (first on line {decls[n].line})")
                        decls[n] = Decl(n, head, shp, onehot, lineno)
            else:
                lhs = p.take(kind="name")[1]
                p.take("=")
                raw.append((lhs, p.expr(), lineno, stmt.strip()))
            if p.peek()[0] != "end":
                raise ModelError(f"{where}: unexpected `{p.peek()[1]}`")
    return _build(stem, path, dims, decls, raw, recur)


def load(path=None) -> Model:
    """A model file; ``None`` is the seed's model, a bare name such as
    ``mlp`` one of the bundled models."""
    if path is None:
        path = "seed"
    p = Path(path)
    if not p.exists() and (MODELS_DIR / f"{path}.eq").exists():
        p = MODELS_DIR / f"{path}.eq"
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read model file {path}: {exc}") from None
    return parse(text, str(path) if p.parent != MODELS_DIR else p.name)


# --------------------------------------------- flattening and shape checks

def _fmt(shape):
    return "×".join(shape)


class _Builder:
    def __init__(self, path, dims, decls, taken, later):
        self.path, self.dims, self.decls = path, dims, decls
        self.shapes = {n: d.shape for n, d in decls.items()}
        self.taken, self.equations = set(taken), []
        self.counters = {"z": 0, "t": 0}
        self.later = later               # lhs -> line, for "used before defined"

    def fresh(self, prefix):
        while True:
            self.counters[prefix] += 1
            n = f"{prefix}{self.counters[prefix]}"
            if n not in self.taken:
                self.taken.add(n)
                return n

    def same(self, a, b):
        """Sizes agree: the same dim name, or equal numbers where one is a literal."""
        size = lambda d: int(d) if d.isdigit() else self.dims[d]  # noqa: E731
        return a == b or ((a.isdigit() or b.isdigit()) and size(a) == size(b))

    def named(self, node, where, prefix):
        """A node as a name, emitting an equation for it if it is not one."""
        if node[0] == "name":
            self.shape_of(node[1], where)
            return node[1]
        n = self.fresh(prefix)
        self.emit(n, node, where)
        return n

    def shape_of(self, n, where):
        if n not in self.shapes:
            at = f"{self.path}:{where[0]}"
            if n in self.later:
                raise ModelError(f"{at}: `{n}` is used before the line that defines it (line {self.later[n]})")
            raise ModelError(f"{at}: `{n}` is used but never declared or defined")
        return self.shapes[n]

    def emit(self, lhs, node, where):
        line, src = where
        at = f"{self.path}:{line}"
        if node[0] == "call":
            f, args = node[1], node[2]
            if f == "cross_entropy":
                if len(args) != 2:
                    raise ModelError(f"{at}: cross_entropy takes (probabilities, one-hot target)")
                p, y = (self.named(a, where, "t") for a in args)
                src_eq = next((e for e in self.equations if e.lhs == p), None)
                if src_eq is None or src_eq.func != "softmax":
                    raise ModelError(f"{at}: `{p}` must be defined as softmax(...) to be the first argument of cross_entropy")
                if not (y in self.decls and self.decls[y].onehot and self.decls[y].role == "target"):
                    raise ModelError(f"{at}: `{y}` must be a one-hot target (declare: target {y} : onehot(n))")
                if not all(self.same(a, b) for a, b in zip(self.shapes[p], self.shapes[y])):
                    raise ModelError(f"{at}: `{p}` is {_fmt(self.shapes[p])} but `{y}` is {_fmt(self.shapes[y])}")
                self.add(Equation(lhs, "loss", line, src, func=f, args=(p, y)), ("1", "1"), at)
                return
            if len(args) != 1:
                raise ModelError(f"{at}: {f} takes one argument")
            a = self.named(args[0], where, "z")
            if f == "softmax" and self.shapes[a][0] != "1":
                raise ModelError(f"{at}: softmax of `{a}` needs a row vector, not {_fmt(self.shapes[a])}")
            self.add(Equation(lhs, "func", line, src, func=f, args=(a,)), self.shapes[a], at)
            return
        terms = []
        for sign, t in (node[1] if node[0] == "sum" else [(1, node)]):
            if t[0] == "mul":
                a, W = self.named(t[1], where, "t"), self.named(t[2], where, "t")
                sa, sw = self.shapes[a], self.shapes[W]
                if sa[0] != "1":
                    raise ModelError(f"{at}: in `{a} {W}` the left factor `{a}` must be a row vector (1×n), not {_fmt(sa)}")
                if not self.same(sa[1], sw[0]):
                    raise ModelError(f"{at}: `{a} {W}` does not conform: ({_fmt(sa)})({_fmt(sw)})")
                terms.append(Term(sign, (a, W)))
                tshape = ("1", sw[1])
            else:
                v = self.named(t, where, "t")
                terms.append(Term(sign, (v,)))
                tshape = self.shapes[v]
            first = terms[0].factors
            want = self.shapes[first[-1]] if len(first) == 1 else ("1", self.shapes[first[1]][1])
            if not all(self.same(a, b) for a, b in zip(tshape, want)):
                raise ModelError(f"{at}: the terms of `{lhs}` have different shapes: {_fmt(want)} and {_fmt(tshape)}")
        self.add(Equation(lhs, "affine", line, src, terms=tuple(terms)), want, at)

    def add(self, eq, shape, at):
        if eq.lhs in self.decls:
            raise ModelError(f"{at}: `{eq.lhs}` is declared as {self.decls[eq.lhs].role}; it cannot be assigned")
        if eq.lhs in self.shapes:
            raise ModelError(f"{at}: `{eq.lhs}` is assigned twice")
        for n in eq.uses():
            if self.decls.get(n) and self.decls[n].role == "target" and eq.kind != "loss":
                raise ModelError(f"{at}: target `{n}` may only appear in cross_entropy")
        self.shapes[eq.lhs] = tuple(shape)
        self.equations.append(eq)


def _names(node):
    if node[0] == "name":
        return {node[1]}
    if node[0] == "call":
        return set().union(*(_names(a) for a in node[2]))
    if node[0] == "mul":
        return _names(node[1]) | _names(node[2])
    return set().union(*(_names(t) for _, t in node[1]))


def _build(stem, path, dims, decls, raw, recur):
    taken = set(decls) | {lhs for lhs, *_ in raw} | set().union(*(_names(n) for _, n, *_ in raw), set())
    b = _Builder(path, dims, decls, taken, {lhs: line for lhs, _, line, _ in raw})
    for lhs, node, line, src in raw:
        if node[0] == "name" and node[1] in FUNCTIONS:
            raise ModelError(f"{path}:{line}: `{node[1]}` is a function")
        b.emit(lhs, node, (line, src))
    if not b.equations:
        raise ModelError(f"{path}: no equations")
    losses = [e for e in b.equations if e.kind == "loss"]
    if len(losses) != 1:
        raise ModelError(f"{path}: need exactly one loss line, e.g. `J = cross_entropy(yhat, y)`; found {len(losses)}")
    loss = losses[0]
    if b.equations[-1] is not loss:
        raise ModelError(f"{path}:{b.equations[-1].line}: `{b.equations[-1].lhs}` comes after the loss; the loss must be last")
    used = {n for e in b.equations for n in e.uses()}
    for n, d in decls.items():
        if n not in used and d.role != "target":
            raise ModelError(f"{path}:{d.line}: `{n}` is declared but never used")
    for e in b.equations[:-1]:
        if e.lhs not in used:
            raise ModelError(f"{path}:{e.line}: `{e.lhs}` is computed but never used on the way to the loss")
    for e in b.equations:
        if e.func == "softmax" and not any(x.kind == "loss" and x.args[0] == e.lhs for x in b.equations):
            raise ModelError(f"{path}:{e.line}: softmax is supported only as the input of cross_entropy")
    rec = {}
    for inp, (state, line) in recur.items():
        if inp not in decls or decls[inp].role != "input" or decls[inp].onehot:
            raise ModelError(f"{path}:{line}: `{inp}` in recur must be a declared (not one-hot) input")
        if state not in b.shapes or state in decls:
            raise ModelError(f"{path}:{line}: `{state}` in recur must be a quantity the equations compute")
        if b.shapes[state] != decls[inp].shape:
            raise ModelError(f"{path}:{line}: `{inp}` is {_fmt(decls[inp].shape)} but `{state}` is {_fmt(b.shapes[state])}")
        rec[inp] = state
    return Model(stem, path, dims, decls, b.equations, b.shapes, rec, loss.lhs)
