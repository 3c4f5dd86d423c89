"""Numbers for the witnesses: random instances of a model, its forward pass
with any quantity overridden, and central finite differences (float64).

Finite differences use ``elman.model.gradcheck.central_difference``, the one
implementation in the project. A derived formula for dJ/dv is compared with
the difference quotient of J in v, where v may be a parameter, an input, or
an intermediate quantity such as h or z1: the forward pass then takes v as
given instead of computing it.

For the seed's own model, ``seed_gradients`` asks the project's backward
functions (``elman.model.step_gradients`` and ``bptt``, built of
``elman.core.layers``) for the same gradients, so the explainer's witness and the
trainer run one implementation of each formula.
"""
from __future__ import annotations

import numpy as np

from elman.model.gradcheck import central_difference, max_rel_error
from elman.core.layers import log_softmax_rows, sigmoid

FUNCS = {
    "sigmoid": sigmoid,
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
    "exp": np.exp,
    "softmax": lambda z: np.exp(log_softmax_rows(z)),
}
TOL = 1e-6          # max relative error of a formula against finite differences


def sizes_for(model, distinct=False):
    """The model's dims; with ``distinct``, sizes made pairwise different so
    that a shape tells which dim it is (a checker instance)."""
    dims = dict(model.dims)
    if distinct and len(set(dims.values())) < len(dims):
        dims = {d: 3 + i for i, d in enumerate(sorted(dims, key=dims.get))}
    return dims


def instance(model, seed=0, dims=None):
    """Random float64 values of every declared quantity (row vectors (1,n))."""
    rng = np.random.default_rng(seed)
    dims = dims or model.dims
    size = lambda d: int(d) if str(d).isdigit() else dims[d]  # noqa: E731
    env = {}
    for n, decl in model.decls.items():
        shape = tuple(size(d) for d in decl.shape)
        if decl.onehot:
            env[n] = np.zeros(shape)
            env[n][0, rng.integers(shape[1])] = 1.0
        elif n in model.recur:
            env[n] = rng.uniform(0.0, 1.0, shape)
        else:
            env[n] = rng.normal(0.0, 0.5, shape)
    return env


def forward(model, env, override=None):
    """Every quantity of one step: ``env`` (the declared ones) plus each
    equation's value, J included; a name in ``override`` is taken as given."""
    out, override = dict(env), override or {}
    out.update({k: v for k, v in override.items() if k in env})
    for eq in model.equations:
        if eq.lhs in override:
            out[eq.lhs] = override[eq.lhs]
        elif eq.kind == "affine":
            out[eq.lhs] = sum(t.sign * t.coef * _term(t, out) for t in eq.terms)
        elif eq.kind == "func":
            out[eq.lhs] = FUNCS[eq.func](out[eq.args[0]])
        else:
            # -log p[y] from the softmax's argument, log-sum-exp shifted: exact in float64.
            z = out[model.definition(eq.args[0]).args[0]]
            out[eq.lhs] = float(-(log_softmax_rows(z) * out[eq.args[1]]).sum())
    return out


def _term(t, out):
    """One term's value without its sign and coefficient (a number: 1)."""
    if t.op == "const":
        return 1.0
    a = out[t.factors[0]]
    if t.op == "plain":
        return a
    b = out[t.factors[1]]
    return {"mul": lambda: a @ b, "mulT": lambda: a @ b.T, "had": lambda: a * b}[t.op]()


def loss(model, env, override=None) -> float:
    return forward(model, env, override)[model.loss]


def finite_difference(model, env, name):
    """dJ/d(name) by central differences, for any quantity of the step."""
    values = forward(model, env)
    arr = values[name].copy()
    return central_difference(lambda: loss(model, env, {name: arr}), arr)


def onehot_index(v) -> int:
    return int(np.argmax(v))


# ---------------------------------------------------- through time (BPTT)

def sequence(model, T=3, seed=0, dims=None):
    """T steps of a recurrent model: params shared, fresh one-hot inputs and
    targets at each step, the recurrent inputs carried (h_prev(t) = h(t-1)).
    Returns the list of step inputs (the first step's recurrent inputs are
    random: h(0), a constant as in truncated BPTT)."""
    base = instance(model, seed, dims)
    rng = np.random.default_rng(seed + 1000)
    steps = []
    for t in range(T):
        env = dict(base)
        for n, decl in model.decls.items():
            if decl.onehot and decl.role != "param":
                env[n] = np.zeros_like(base[n])
                env[n][0, rng.integers(env[n].shape[1])] = 1.0
        steps.append(env)
    return steps


def unroll(model, steps, override=None, at=None):
    """Forward over the steps. Returns (total J, list of step values).
    ``override``: declared quantities (parameters) for every step; ``at``:
    (t, {name: value}), a quantity taken as given at step t only."""
    values, carried = [], {}
    for t, env in enumerate(steps):
        env = {**env, **carried, **{k: v for k, v in (override or {}).items() if k in env and k not in model.recur}}
        out = forward(model, env, at[1] if at is not None and at[0] == t else None)
        values.append(out)
        carried = {inp: out[state] for inp, state in model.recur.items()}
    return sum(v[model.loss] for v in values), values


def sequence_finite_difference(model, steps, name):
    """d(Σ_t J(t))/d(param) by central differences."""
    arr = steps[0][name].copy()
    return central_difference(lambda: unroll(model, steps, {name: arr})[0], arr)


def sequence_state_fd(model, steps, name, t):
    """d(Σ_t J(t))/d(name at step t): the quantity perturbed at that step only."""
    arr = unroll(model, steps)[1][t][name].copy()
    return central_difference(lambda: unroll(model, steps, at=(t, {name: arr}))[0], arr)


# ------------------------------------------------------- the seed's own code

def is_seed(model) -> bool:
    """The seed's model (whatever the file is called): its six parameters
    with the seed's shapes and the seed's five equations."""
    from elman.explain.equations import load
    ref = load("seed")

    def sig(m):
        return ([(e.lhs, e.kind, e.terms, e.func, e.args) for e in m.equations],
                {n: m.shapes[n] for n in m.decls}, m.recur)
    return sig(model) == sig(ref)


def seed_params(env):
    from elman.model import Params
    return Params.from_dict({n: env[n].reshape(-1) if n in ("b1", "b2") else env[n]
                             for n in ("L", "I", "H", "U", "b1", "b2")})


def seed_gradients(env):
    """The seed's eight quantities from ``elman.model.step_gradients`` (the
    project's backward pass), as (1,n) rows where the engine has rows."""
    from elman.model import step_gradients
    g = step_gradients(seed_params(env), onehot_index(env["x"]), onehot_index(env["y"]),
                       env["h_prev"][0].copy())
    return {k: np.atleast_2d(v) for k, v in g.items()}


def seed_bptt(steps):
    """Full-sequence gradients from ``elman.model.bptt`` for the steps."""
    from elman.model import bptt
    inputs = np.array([[onehot_index(s["x"]) for s in steps]])
    targets = np.array([[onehot_index(s["y"]) for s in steps]])
    _, grads, _ = bptt(seed_params(steps[0]), inputs, targets, steps[0]["h_prev"].copy())
    return {k: np.atleast_2d(v) for k, v in grads.items()}


def agree(a, b) -> float:
    """The relative error used everywhere: elman.model.gradcheck's."""
    return max_rel_error(a, b)
