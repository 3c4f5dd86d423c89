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

Products are written by juxtaposition (``h U``) or ``@``, a declared param
may be transposed on the right (``h E.T`` or ``h Eᵀ``); ``a * b`` (or
``a ⊙ b``) multiplies two rows entry by entry; numbers may be added or
multiply (``1 - z``, ``0.5 * a``); ``+`` and ``-`` add terms; functions are
sigmoid, tanh, relu, exp (element-wise) and softmax (only as the input of
cross_entropy). ``recur h_prev <- h`` says that the input h_prev of step
t+1 is h of step t; a model may have several (an LSTM's h and c, the
layers of a stacked network). Statements end at a newline or ``;``.

The grammar is in ``grammar.py``, the flattening into one operation per
equation in ``flatten.py``. Errors name the file, the line and the symbol.
"""
from __future__ import annotations

from pathlib import Path

from elman.explain.flatten import Builder, fmt
from elman.explain.grammar import FUNCTIONS, ModelError, Parser, names_in, shape, tokens
from elman.explain.ir import Decl, Model

__all__ = ["ModelError", "Model", "parse", "load"]

KEYWORDS = ("dim", "input", "target", "param", "recur")
MODELS_DIR = Path(__file__).parent / "models"


# ------------------------------------------------------------- the reader

def parse(text: str, path: str = "<model>") -> Model:
    """Read a model file's text into a checked ``Model``."""
    found = {"dims": {}, "decls": {}, "raw": [], "recur": {}}
    for lineno, line in enumerate(text.splitlines(), 1):
        for stmt in line.split("#", 1)[0].split(";"):
            where = f"{path}:{lineno}"
            toks = tokens(stmt, where)
            if toks:
                _statement(Parser(toks, where), toks, lineno, stmt, found)
    return _build(Path(path).stem, path, **found)


def _statement(p, toks, lineno, stmt, found):
    head = toks[0][1]
    if head in KEYWORDS and len(toks) > 1 and toks[1][1] != "=":
        p.take()
        {"dim": _dims, "recur": _recur}.get(head, _declaration)(p, head, lineno, found)
    else:
        lhs = p.take(kind="name")[1]
        p.take("=")
        found["raw"].append((lhs, p.expr(), lineno, stmt.strip()))
    if p.peek()[0] != "end":
        raise ModelError(f"{p.where}: unexpected `{p.peek()[1]}`")


def _dims(p, head, lineno, found):
    while True:
        n = p.take(kind="name")[1]
        p.take("=")
        value = p.take(kind="num")[1]
        if not value.isdigit() or int(value) < 1:
            raise ModelError(f"{p.where}: dim `{n}` must be a whole number of at least 1, not {value}")
        found["dims"][n] = int(value)
        if p.peek()[1] != ",":
            break
        p.take()


def _recur(p, head, lineno, found):
    inp = p.take(kind="name")[1]
    p.take("<-")
    if inp in found["recur"]:
        raise ModelError(f"{p.where}: `{inp}` already reads a state (line {found['recur'][inp][1]})")
    found["recur"][inp] = (p.take(kind="name")[1], lineno)


def _declaration(p, head, lineno, found):
    names = [p.take(kind="name")[1]]
    while p.peek()[1] == ",":
        p.take()
        names.append(p.take(kind="name")[1])
    p.take(":")
    shp, onehot = shape(p, found["dims"])
    decls = found["decls"]
    for n in names:
        if n in decls:
            raise ModelError(f"{p.where}: `{n}` is declared twice (first on line {decls[n].line})")
        decls[n] = Decl(n, head, shp, onehot, lineno)


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


# ------------------------------------------------------ the whole model

def _build(stem, path, dims, decls, raw, recur):
    taken = set(decls) | {lhs for lhs, *_ in raw} | set().union(*(names_in(n) for _, n, *_ in raw), set())
    b = Builder(path, dims, decls, taken, {lhs: line for lhs, _, line, _ in raw})
    for lhs, node, line, src in raw:
        if node[0] == "name" and node[1] in FUNCTIONS:
            raise ModelError(f"{path}:{line}: `{node[1]}` is a function")
        b.emit(lhs, node, (line, src))
    loss = _check_loss(path, b.equations)
    _check_used(path, decls, b.equations)
    rec = _check_recur(path, decls, b.shapes, recur)
    lookups = _lookups(path, b)
    return Model(stem, path, dims, decls, b.equations, b.shapes, rec, loss.lhs, lookups)


def _check_loss(path, equations):
    if not equations:
        raise ModelError(f"{path}: no equations")
    losses = [e for e in equations if e.kind == "loss"]
    if len(losses) != 1:
        raise ModelError(f"{path}: need exactly one loss line, e.g. `J = cross_entropy(yhat, y)`; found {len(losses)}")
    if equations[-1] is not losses[0]:
        last = equations[-1]
        raise ModelError(f"{path}:{last.line}: `{last.lhs}` comes after the loss; the loss must be last")
    for e in equations:
        if e.func == "softmax" and not any(x.kind == "loss" and x.args[0] == e.lhs for x in equations):
            raise ModelError(f"{path}:{e.line}: softmax is supported only as the input of cross_entropy")
    return losses[0]


def _check_used(path, decls, equations):
    used = {n for e in equations for n in e.uses()}
    for n, d in decls.items():
        if n not in used and d.role != "target":
            raise ModelError(f"{path}:{d.line}: `{n}` is declared but never used")
    for e in equations[:-1]:
        if e.lhs not in used:
            raise ModelError(f"{path}:{e.line}: `{e.lhs}` is computed but never used on the way to the loss")


def _check_recur(path, decls, shapes, recur):
    rec = {}
    for inp, (state, line) in recur.items():
        if inp not in decls or decls[inp].role != "input" or decls[inp].onehot:
            raise ModelError(f"{path}:{line}: `{inp}` in recur must be a declared (not one-hot) input")
        if state not in shapes or state in decls:
            raise ModelError(f"{path}:{line}: `{state}` in recur must be a quantity the equations compute")
        if shapes[state] != decls[inp].shape:
            raise ModelError(f"{path}:{line}: `{inp}` is {fmt(decls[inp].shape)} but `{state}` is {fmt(shapes[state])}")
        rec[inp] = state
    return rec


def _lookups(path, b):
    """Each one-hot row times a matrix (e = x L) reads one row of the matrix;
    the row's gradient is a target of its own, named L_x, with the pair
    (L, x) kept here so that no name is ever split to find it."""
    out = {}
    for e in b.equations:
        for t in e.terms:
            if t.op == "mul" and t.factors[0] in b.decls and b.decls[t.factors[0]].onehot:
                x, W = t.factors
                row = f"{W}_{x}"
                if row in b.shapes:
                    raise ModelError(f"{path}:{e.line}: `{row}` names the row of `{W}` that `{x}` looks up; "
                                     "rename the quantity called so")
                out[row] = (W, x)
    return out
