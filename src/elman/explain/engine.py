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

``through_time`` extends the one-step result to a sequence (BPTT) for a
model with ``recur``: dJ/dh(t) gains the term that h(t) sends back through
step t+1, and every parameter gradient becomes a sum over t.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from elman.explain import expr as E
from elman.explain import numeric, rules


class EngineError(AssertionError):
    """A derived formula disagreed with finite differences: a bug here."""


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
    d = Derivation(model, numeric.forward(model, inputs), inputs)
    pending = defaultdict(list)
    loss_eq = model.equations[-1]
    softmax_eq = model.definition(loss_eq.args[0])
    pending[softmax_eq.args[0]].append(rules.softmax_xent(model, loss_eq, softmax_eq))
    rows = []
    for eq in reversed(model.equations[:-1]):
        if eq is softmax_eq:
            continue
        _finish(d, eq.lhs, pending.pop(eq.lhs))
        if eq.kind == "func":
            pending[eq.args[0]].append(rules.elementwise(model, eq))
            continue
        for term in eq.terms:
            if len(term.factors) == 2:
                a, W = term.factors
                pending[W].append(rules.product_weight(model, eq, term))
                if model.is_onehot(a):
                    rows.append(rules.embedding_row(model, eq, term))
                else:
                    pending[a].append(rules.product_input(model, eq, term))
            elif not model.is_onehot(term.factors[0]):
                pending[term.factors[0]].append(rules.plain_term(model, eq, term))
    for name in list(pending):
        _finish(d, name, pending.pop(name))
    for row in rows:
        _finish(d, row.target, [row])
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
        raise EngineError(f"dJ/d{name} = {E.to_numpy(expr)} fails its numerical check "
                          f"(max relative error {err:.2e} against finite differences)")
    d.env[E.key(name, True)] = value
    d.steps[name] = Step(name, expr, contribs, value, fd, err)


def _finite_difference(d, name):
    if name in d.model.shapes:
        return numeric.finite_difference(d.model, d.inputs, name)
    L, x = name.split("_", 1)          # an embedding row L_x: row x of dJ/dL
    full = numeric.finite_difference(d.model, d.inputs, L)
    return full[[numeric.onehot_index(d.inputs[x])]]


# ------------------------------------------------------------ through time

@dataclass
class ThroughTime:
    """Back-propagation through time for a model with ``recur``."""
    state: str             # h
    carried: str           # h_prev: the input that is h one step back
    total: object          # dJ/dh(t) = local + Shift(dJ/dh_prev)
    params: list           # names whose full gradient is Σ_t of the step formula
    T: int
    values: dict           # name -> Σ_t formula (with carried terms)
    local_only: dict       # name -> Σ_t formula without the carried term ("at (t)")
    fd: dict               # name -> finite differences of Σ_t J(t)
    errors: dict
    steps_env: list        # per-step values (forward and adjoints)


def through_time(d: Derivation, T=3, seed=0) -> ThroughTime:
    model = d.model
    if not model.recur:
        raise EngineError("the model has no recur line")
    carried, state = next(iter(model.recur.items()))
    total = E.Add(d.steps[state].expr, E.Shift(d.steps[carried].expr))
    params = [n for n in d.steps if n in model.params] + [n for n in d.steps if n not in model.shapes]
    steps = numeric.sequence(model, T, seed, {k: v for k, v in model.dims.items()})
    _, fwd = numeric.unroll(model, steps)

    def backward(with_carry):
        envs = [dict(v) for v in fwd]
        for t in range(T - 1, -1, -1):
            later = envs[t + 1] if t + 1 < T and with_carry else None
            for name, step in d.steps.items():
                e = total if name == state else step.expr
                envs[t][E.key(name, True)] = E.evaluate(e, envs[t], later)
        sums = {}
        for n in params:
            rows = [env[E.key(n, True)] for env in envs]
            if n not in model.shapes:          # embedding row: add into the word's row of L
                L, x = n.split("_", 1)
                acc = np.zeros(steps[0][L].shape)
                for env, r in zip(envs, rows):
                    acc[numeric.onehot_index(env[x])] += r[0]
                sums[L] = acc
            else:
                sums[n] = sum(rows)
        return sums, envs

    values, envs = backward(True)
    local, _ = backward(False)
    fd = {n: numeric.sequence_finite_difference(model, steps, n) for n in values}
    errors = {n: numeric.agree(values[n], fd[n]) for n in values}
    bad = {n: e for n, e in errors.items() if not e < numeric.TOL}
    if bad:
        raise EngineError(f"through-time gradients fail their numerical check: {bad}")
    return ThroughTime(state, carried, total, list(values), T, values, local, fd, errors, envs)
