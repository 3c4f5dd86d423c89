"""The formulas the engine derives, as small expression trees.

A tree can be rendered (text and TeX, through ``notation``), evaluated on
NumPy arrays, written as NumPy source, re-expressed in the column-vector
convention, and have one element-wise derivative factor removed (what the
checker's "missing-factor" verdict compares against).

Leaves are ``Sym(name)`` for a forward quantity and ``Sym(name, adj=True)``
for its adjoint dJ/dname (shown δ1, δ2 for the pre-activations z1, z2).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace

import numpy as np

from elman.explain import notation as nt


@dataclass(frozen=True)
class Sym:
    name: str
    adj: bool = False
    col: bool = False        # a matrix of the column convention, W̃ = Wᵀ


@dataclass(frozen=True)
class T:
    a: object


@dataclass(frozen=True)
class MatMul:
    a: object
    b: object


@dataclass(frozen=True)
class Had:
    """Element-wise product ⊙."""
    a: object
    b: object


@dataclass(frozen=True)
class Scale:
    """A number times ``a`` (0.5 a), from a coefficient in the model file."""
    c: float
    a: object


@dataclass(frozen=True)
class Add:
    a: object
    b: object


@dataclass(frozen=True)
class Neg:
    a: object


@dataclass(frozen=True)
class OneMinus:
    a: object


@dataclass(frozen=True)
class Step:
    """1[a > 0], element-wise: relu'."""
    a: object


@dataclass(frozen=True)
class Deriv:
    """f'(arg), shown and computed as ``body`` (sigmoid'(z) = h ⊙ (1 - h));
    kept as a node so the checker can leave the factor out."""
    f: str
    arg: object
    body: object


@dataclass(frozen=True)
class Shift:
    """``a`` one time step later, at t+1 (back-propagation through time)."""
    a: object


NODES = (T, MatMul, Had, Scale, Add, Neg, OneMinus, Step, Deriv, Shift)


def _sub_exprs(e):
    """(field, value) of the fields that hold expressions (not f, not c)."""
    return [(f, getattr(e, f)) for f in e.__dataclass_fields__ if isinstance(getattr(e, f), (Sym,) + NODES)]


def children(e):
    return [v for _, v in _sub_exprs(e)] if isinstance(e, NODES) else []


def rebuild(e, fn):
    """Apply ``fn`` to every child (bottom-up helper)."""
    if not isinstance(e, NODES):
        return e
    return replace(e, **{f: fn(v) for f, v in _sub_exprs(e)})


def add(a, b):
    return b if a is None else Add(a, b)


def sub(e, table):
    """Replace adjoint leaves by expressions: {name: expr}."""
    if isinstance(e, Sym):
        return table.get(e.name, e) if e.adj else e
    return rebuild(e, lambda c: sub(c, table))


def derivs(e):
    """Every element-wise derivative factor in ``e``."""
    out = [e] if isinstance(e, Deriv) else []
    for c in children(e):
        out += [d for d in derivs(c) if d not in out]
    return out


def without(e, factor):
    """``e`` with the factor f'(...) replaced by ones."""
    if e == factor:
        return ("ones", factor)
    if isinstance(e, Had):
        a, b = without(e.a, factor), without(e.b, factor)
        if isinstance(a, tuple):
            return b
        if isinstance(b, tuple):
            return a
        return Had(a, b)
    out = rebuild(e, lambda c: without(c, factor))
    return out


# ------------------------------------------------------------- evaluation

def key(name, adj=False):
    return f"d:{name}" if adj else name


def evaluate(e, env, later=None):
    """Value of ``e`` with leaves from ``env`` (adjoints under ``d:name``);
    ``later`` is the environment of step t+1 for ``Shift`` (None: the last
    step, where nothing comes back from the future)."""
    ev = lambda x: evaluate(x, env, later)  # noqa: E731
    if isinstance(e, Sym):
        return env[key(e.name, e.adj)]
    if isinstance(e, T):
        return ev(e.a).T
    if isinstance(e, MatMul):
        return ev(e.a) @ ev(e.b)
    if isinstance(e, Had):
        return ev(e.a) * ev(e.b)
    if isinstance(e, Add):
        return ev(e.a) + ev(e.b)
    if isinstance(e, Scale):
        return e.c * ev(e.a)
    if isinstance(e, Neg):
        return -ev(e.a)
    if isinstance(e, OneMinus):
        return 1.0 - ev(e.a)
    if isinstance(e, Step):
        return (ev(e.a) > 0).astype(np.float64)
    if isinstance(e, Deriv):
        return ev(e.body)
    if isinstance(e, Shift):
        return 0.0 if later is None else evaluate(e.a, later)
    raise TypeError(e)


# ---------------------------------------------------------- column convention

def transpose(e):
    """Push a transpose down to the leaves: (AB)ᵀ = BᵀAᵀ, (Aᵀ)ᵀ = A."""
    if isinstance(e, T):
        return e.a
    if isinstance(e, MatMul):
        return MatMul(transpose(e.b), transpose(e.a))
    if isinstance(e, Sym):
        return T(e)
    return rebuild(e, transpose)


def is_flipped(model, n, wform):
    """In the column convention every vector is a column (its row form
    transposed); matrices too in the W-form (z = W̃ a, W̃ = Wᵀ)."""
    s = model.shapes.get(n, ("1", "1"))
    return s[0] == "1" or wform


def to_column(e, model, target_flipped, wform=False):
    """The same gradient written for column vectors.

    Every row leaf X becomes (X_c)ᵀ; if the target itself is transposed in
    the column convention, so is the whole formula; then the transposes are
    pushed down. The value is the row value, transposed where the target is.
    """
    def leaf(x):
        if isinstance(x, Sym):
            return T(replace(x, col=True)) if is_flipped(model, x.name, wform) else x
        return rebuild(x, leaf)

    out = leaf(e)
    out = transpose(out) if target_flipped else out
    return _simplify(out)


def _simplify(e):
    if isinstance(e, T):
        inner = _simplify(e.a)
        return _simplify(transpose(inner)) if not isinstance(inner, Sym) else T(inner)
    e = rebuild(e, _simplify)
    if isinstance(e, Add):              # aᵀ − bᵀ reads better as (a − b)ᵀ
        b = e.b.a if isinstance(e.b, Neg) else e.b
        if isinstance(e.a, T) and isinstance(b, T):
            return T(Add(e.a.a, Neg(b.a) if isinstance(e.b, Neg) else b.a))
    return e


def column_env(env, model, wform=False):
    out = {}
    for k, v in env.items():
        n = k[2:] if k.startswith("d:") else k
        out[k] = v.T if is_flipped(model, n, wform) and np.ndim(v) == 2 else v
    return out


# ------------------------------------------------------------- rendering

_PREC = {Add: 1, Neg: 1, Had: 2, Scale: 2, MatMul: 3}


def prec(e):
    if isinstance(e, Deriv):
        return prec(e.body)
    return _PREC.get(type(e), 4)


def sym_math(s: Sym, model, timed=False, shift=0) -> nt.M:
    prev = model.prev_of(s.name)
    if prev and timed:
        base = nt.name(prev)
        tt = "t−1" if shift == 0 else "t"
        m = nt.M(f"{base.text}({tt})", "{" + base.tex + "^{(" + tt.replace("−", "-") + ")}}")
    else:
        m = nt.name(s.name, prev=prev)
        if timed and s.name in model.shapes and s.name not in model.params:
            tt = "(t)" if shift == 0 else "(t+1)"
            m = nt.M(m.text + tt, "{" + m.tex + "^{" + tt + "}}")
    if s.col and model.shapes.get(s.name, ("1",))[0] != "1":
        m = nt.M(unicodedata.normalize("NFC", m.text[0] + "\u0303") + m.text[1:], r"\tilde{" + m.tex[0] + "}" + m.tex[1:])
    if s.adj:
        k = re.fullmatch(r"z(\d+)", s.name)
        if k:
            d = nt.M("δ" + k[1], r"\delta_{" + k[1] + "}")
            if timed:
                tt = "(t)" if shift == 0 else "(t+1)"
                d = nt.M(d.text + tt, "{" + d.tex + "^{" + tt + "}}")
            return d
        return nt.frac(nt.M("J", "J"), m)
    return m


def render(e, model, timed=False, shift=0) -> nt.M:
    """Text and TeX of an expression."""
    r = lambda x: render(x, model, timed, shift)  # noqa: E731

    def wrap(x, p):
        m = r(x)
        return nt.seq("(", m, ")") if prec(x) < p else m

    if isinstance(e, Sym):
        return sym_math(e, model, timed, shift)
    if isinstance(e, T):
        inner = wrap(e.a, 4)
        return nt.M(inner.text + "ᵀ", "{" + inner.tex + r"}^{\top}")
    if isinstance(e, MatMul):
        return nt.seq(wrap(e.a, 3), " ", wrap(e.b, 4))
    if isinstance(e, Had):
        return nt.seq(wrap(e.a, 2), " ⊙ ", wrap(e.b, 2))
    if isinstance(e, Add):
        if isinstance(e.b, Neg):
            return nt.seq(wrap(e.a, 1), " − ", wrap(e.b.a, 2))
        return nt.seq(wrap(e.a, 1), " + ", wrap(e.b, 1))
    if isinstance(e, Scale):
        return nt.seq(number(e.c), " ", wrap(e.a, 3))
    if isinstance(e, Neg):
        return nt.seq("−", wrap(e.a, 2))
    if isinstance(e, OneMinus):
        return nt.seq("(1 − ", wrap(e.a, 2), ")")
    if isinstance(e, Step):
        return nt.seq("[", r(e.a), " > 0]")
    if isinstance(e, Deriv):
        return r(e.body)
    if isinstance(e, Shift):
        return render(e.a, model, timed=True, shift=1)
    raise TypeError(e)


def numpy_name(n, adj=False):
    if not adj:
        return n
    k = re.fullmatch(r"z(\d+)", n)
    return f"delta{k[1]}" if k else f"dJ_d{n}"


def to_numpy(e) -> str:
    """The formula as NumPy source over the checker's names."""
    def wrap(x, p):
        s = to_numpy(x)
        return f"({s})" if prec(x) < p else s

    if isinstance(e, Sym):
        return numpy_name(e.name, e.adj)
    if isinstance(e, T):
        return wrap(e.a, 4) + ".T"
    if isinstance(e, MatMul):
        return f"{wrap(e.a, 3)} @ {wrap(e.b, 4)}"
    if isinstance(e, Had):
        return f"{wrap(e.a, 2)} * {wrap(e.b, 4)}"   # * and @ bind alike in Python
    if isinstance(e, Add):
        if isinstance(e.b, Neg):
            return f"{wrap(e.a, 1)} - {wrap(e.b.a, 2)}"
        return f"{wrap(e.a, 1)} + {wrap(e.b, 1)}"
    if isinstance(e, Scale):
        return f"{e.c:g} * {wrap(e.a, 4)}"
    if isinstance(e, Neg):
        return f"-{wrap(e.a, 2)}"
    if isinstance(e, OneMinus):
        return f"(1 - {wrap(e.a, 2)})"
    if isinstance(e, Step):
        return f"({to_numpy(e.a)} > 0)"
    if isinstance(e, Deriv):
        return to_numpy(e.body)
    raise TypeError(e)


def number(c) -> nt.M:
    """A coefficient as written: 0.5, 2, 1e-3."""
    return nt.op(f"{c:g}".replace("-", "−"))


def shape_of(e, model):
    """Symbolic (rows, cols) of an expression."""
    if isinstance(e, Sym):
        s = model.row_shape(e.name)
        return s[::-1] if e.col else s       # col leaves exist only where the convention flips them
    if isinstance(e, T):
        return shape_of(e.a, model)[::-1]
    if isinstance(e, MatMul):
        return (shape_of(e.a, model)[0], shape_of(e.b, model)[1])
    if isinstance(e, Deriv):
        return shape_of(e.body, model)
    return shape_of(children(e)[0], model)
