"""Back-propagation through time, for a model with one or more ``recur``
lines, each result checked against finite differences of the unrolled loss.

One step's formulas stay as they are; what changes is what the adjoint of
a state means. h(t) is used by its own step and, as h_prev, by step t+1,
so the fan-out rule adds dJ/dh(t) = (its one-step formula) + dJ/dh_prev(t+1)
for every state (an LSTM's h and c, each layer of a stacked network), and
every parameter's gradient is the sum over t of its one-step formula. The
engine checks each parameter's sum and each state's adjoint at each step
against central differences of Σ_t J(t), perturbing that quantity at that
step only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from elman.explain import expr as E
from elman.explain import numeric
from elman.explain.engine import EngineError


@dataclass
class ThroughTime:
    totals: dict           # state -> dJ/dstate(t): one-step formula + Σ Shift(dJ/d carried input)
    params: list
    T: int
    values: dict           # param -> Σ_t formula, carried terms in
    local_only: dict       # param -> Σ_t formula without any carried term (the seed's "at (t)")
    fd: dict               # param -> finite differences of Σ_t J(t)
    errors: dict           # param -> max relative error
    state_values: dict     # state -> (T, 1, n): dJ/dstate(t) for t = 1..T
    state_fd: dict
    state_errors: dict
    own_path_only: dict    # state -> error with the other states' carried terms left out (several states)
    steps_env: list        # per-step values, forward and adjoints

    @property
    def states(self):
        return list(self.totals)


def totals(d, carry=None):
    """dJ/dstate(t) for each state: its one-step formula plus, for each input
    that carries it, that input's adjoint one step later. ``carry``: the
    states whose carried terms are kept (default all)."""
    model, out = d.model, {}
    for s in model.states:
        e = d.steps[s].expr
        if carry is None or s in carry:
            for inp in model.carried(s):
                e = E.Add(e, E.Shift(d.steps[inp].expr))
        out[s] = e
    return out


def _backward(d, fwd, tot):
    """Every adjoint at every step, from t = T down to 1."""
    envs = [dict(v) for v in fwd]
    for t in range(len(envs) - 1, -1, -1):
        later = envs[t + 1] if t + 1 < len(envs) else None
        for name, step in d.steps.items():
            envs[t][E.key(name, True)] = E.evaluate(tot.get(name, step.expr), envs[t], later)
    return envs


def _sums(envs, names):
    return {n: sum(env[E.key(n, True)] for env in envs) for n in names}


def _per_step(envs, s):
    return np.stack([env[E.key(s, True)] for env in envs])


def through_time(d, T=3) -> ThroughTime:
    model = d.model
    if not model.recur:
        raise EngineError(f"{model.path}: the model has no recur line, so there is no sequence")
    tot = totals(d)
    params = [n for n in d.steps if n in model.params]
    steps = numeric.sequence(model, T, d.seed, d.dims)
    _, fwd = numeric.unroll(model, steps)
    envs = _backward(d, fwd, tot)
    values = _sums(envs, params)
    local = _sums(_backward(d, fwd, {}), params)
    fd = {n: numeric.sequence_finite_difference(model, steps, n) for n in params}
    errors = {n: numeric.agree(values[n], fd[n]) for n in params}
    svals = {s: _per_step(envs, s) for s in tot}
    sfd = {s: np.stack([numeric.sequence_state_fd(model, steps, s, t) for t in range(T)]) for s in tot}
    serr = {s: numeric.agree(svals[s], sfd[s]) for s in tot}
    for n, err in list(errors.items()) + list(serr.items()):
        if not err < numeric.TOL:
            what = f"Σ_t dJ/d{n}" if n in errors else f"dJ/d{n}(t)"
            raise EngineError(f"{model.path}:{model.line_of(n)}: through time, {what} fails its numerical check "
                              f"(max relative error {err:.2e} against finite differences of Σ_t J(t))")
    own = {}
    if len(tot) > 1:
        for s in tot:
            alone = _per_step(_backward(d, fwd, totals(d, carry={s})), s)
            own[s] = numeric.agree(alone, sfd[s])
    return ThroughTime(tot, params, T, values, local, fd, errors, svals, sfd, serr, own, envs)
