"""Reverse-mode differentiation of a model's equations, one rule at a time,
each result checked by finite differences the moment it is derived.

Read ``derive`` top to bottom: start at the loss (softmax with
cross-entropy gives dJ/dz = ŷ - y), walk the equations backwards, and let
each equation hand a contribution to every quantity it uses (``rules``).
When the walk reaches the equation that defines a quantity, every use of
that quantity lies behind it, so its gradient is complete: the engine sums
the contributions, evaluates the formula on a random float64 instance and
compares it with central finite differences of J. Parameters and inputs
are completed at the end. A formula that fails its check stops the engine.

``through_time.py`` extends the one-step result to a sequence (BPTT) for a
model with ``recur``.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from elman.explain import expr as E
from elman.errors import ElmanError
from elman.explain import numeric, rules
from elman.explain.products import lookup_rows


class EngineError(ElmanError):
    """A derived formula disagreed with finite differences (a bug here, or a
    construct the engine gets wrong): one line naming the file, the line and
    the quantity."""


@dataclass
class Step:
    name: str              # the quantity: "U", "z2", "h", or an embedding row "L_x"
    expr: object           # dJ/d(name), over forward quantities and earlier adjoints
    contribs: list         # one per equation that uses the quantity
    value: np.ndarray      # the formula's value on the instance
    fd: np.ndarray         # the finite-difference gradient on the instance
    error: float           # their max relative error


@dataclass
class Derivation:
    model: object
    env: dict              # the instance: every forward quantity, and adjoints as d:name
    inputs: dict           # the instance's declared quantities only
    dims: dict             # the instance's sizes
    seed: int
    steps: dict = field(default_factory=dict)   # name -> Step, in the order derived

    def expanded(self, name):
        """dJ/d(name) with every adjoint replaced by its own formula."""
        e = self.steps[name].expr
        table = {n: self.expanded(n) for n in self._adjoints(e)}
        return E.sub(e, table)

    def chain(self, name):
        """The steps behind ``name``, from the loss down, ``name`` last."""
        out = []
        for n in self._adjoints(self.steps[name].expr):
            out += [k for k in self.chain(n) if k not in out]
        return out + [name]

    @staticmethod
    def _adjoints(e):
        if isinstance(e, E.Sym):
            return [e.name] if e.adj else []
        return [n for c in E.children(e) for n in Derivation._adjoints(c)]


def derive(model, seed=0, dims=None) -> Derivation:
    inputs = numeric.instance(model, seed, dims)
    d = Derivation(model, numeric.forward(model, inputs), inputs, dims or dict(model.dims), seed)
    pending = defaultdict(list)
    loss_eq = model.equations[-1]
    softmax_eq = model.definition(loss_eq.args[0])
    pending[softmax_eq.args[0]].append(rules.softmax_xent(model, loss_eq, softmax_eq))
    for eq in reversed(model.equations[:-1]):
        if eq is softmax_eq:
            continue
        _finish(d, eq.lhs, pending.pop(eq.lhs))
        for c in rules.contributions(model, eq):
            pending[c.target].append(c)
    for name in list(pending):
        _finish(d, name, pending.pop(name))
    for row, (L, _) in model.lookups.items():
        _finish(d, row, lookup_rows(model, row, d.steps[L].contribs))
    return d


def _finish(d, name, contribs):
    """Sum a quantity's contributions, evaluate, and check against finite differences."""
    expr = None
    for c in contribs:
        expr = E.add(expr, c.expr)
    value = E.evaluate(expr, d.env)
    fd = _finite_difference(d, name)
    err = numeric.agree(value, fd)
    if not err < numeric.TOL:
        raise EngineError(f"{d.model.path}:{d.model.line_of(name)}: dJ/d{name} = {E.to_numpy(expr)} fails its "
                          f"numerical check (max relative error {err:.2e} against finite differences)")
    d.env[E.key(name, True)] = value
    d.steps[name] = Step(name, expr, contribs, value, fd, err)


def _finite_difference(d, name):
    if name in d.model.shapes:
        return numeric.finite_difference(d.model, d.inputs, name)
    L, x = d.model.lookups[name]          # an embedding row L_x: row x of dJ/dL
    full = numeric.finite_difference(d.model, d.inputs, L)
    return full[[numeric.onehot_index(d.inputs[x])]]
