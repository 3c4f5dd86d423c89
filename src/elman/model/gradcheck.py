"""Gradient checking as a feature: every analytic gradient against central
finite differences, in float64, with a table a person can read.

The relative error of one gradient is

    max_i |g_i - n_i| / max(max_i |g_i|, max_i |n_i|, 1e-3)

the worst element's error measured against the gradient's own scale.
Dividing element by element would blow up where the true gradient is 0 and
the difference quotient is 1e-12 of rounding noise; the floor of 1e-3 does
the same for a whole gradient that is tiny (a 1×1 embedding, say): the
quotient's rounding noise, about ulp(J)/eps ~ 1e-11, is a fixed absolute
amount, so below that scale the error is held to 1e-3·tol absolutely.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from elman.core.layers import embedding_forward, rnn_input_forward, rnn_step_forward, softmax_loss_forward
from elman.core.params import Params
from elman.model.network import bptt, step_gradients

EPS = 1e-5


def central_difference(f, arr, eps=EPS):
    """dJ/darr by (f(arr + eps) - f(arr - eps)) / 2eps, one element at a time.

    ``arr`` is perturbed in place and restored exactly; ``f`` takes no
    arguments and reads ``arr`` through its closure.
    """
    grad = np.zeros(arr.shape, dtype=np.float64)
    # By index, not through a flat reshape: Params' U is a transposed view
    # (``model.word_major``), which reshape would copy, perturbing nothing.
    for i in np.ndindex(arr.shape):
        old = arr[i]
        arr[i] = old + eps
        plus = f()
        arr[i] = old - eps
        minus = f()
        arr[i] = old
        grad[i] = (plus - minus) / (2 * eps)
    return grad


SCALE_FLOOR = 1e-3


def max_rel_error(analytic, numeric) -> float:
    analytic, numeric = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    scale = max(np.abs(analytic).max(initial=0.0), np.abs(numeric).max(initial=0.0), SCALE_FLOOR)
    return float(np.abs(analytic - numeric).max(initial=0.0) / scale)


@dataclass
class Row:
    name: str
    shape: tuple
    max_rel_error: float
    max_abs_error: float


def random_instance(V=11, d=5, Dh=7, B=3, T=4, seed=0):
    """A float64 model with every parameter random (biases too, so no term is
    checked only at zero), random word ids, and a random carried state."""
    rng = np.random.default_rng(seed)
    p = Params.init(V, d, Dh, seed=seed, dtype="float64")
    for name, arr in p.as_dict().items():
        arr[...] = rng.normal(0.0, 0.5, arr.shape)
    inputs = rng.integers(0, V, (B, T))
    targets = rng.integers(0, V, (B, T))
    h0 = rng.uniform(0.0, 1.0, (B, Dh))
    return p, inputs, targets, h0


def _row(name, analytic, numeric):
    return Row(name, tuple(np.shape(analytic)), max_rel_error(analytic, numeric),
               float(np.abs(np.asarray(analytic) - numeric).max(initial=0.0)))


def check_bptt(p, inputs, targets, h0, eps=EPS):
    """Rows for the full BPTT gradient of every parameter."""
    _, grads, _ = bptt(p, inputs, targets, h0)

    def loss():
        return bptt(p, inputs, targets, h0)[0]

    return [_row(name, grads[name], central_difference(loss, arr, eps))
            for name, arr in p.as_dict().items()]


def step_loss(p, x, y, h_prev, h=None):
    """J(t) = -ln yhat(t)[y] by the forward pass; with ``h`` given, from h(t) on."""
    if h is None:
        e, _ = embedding_forward(np.array([x]), p.L)
        h, _ = rnn_step_forward(h_prev[None, :], rnn_input_forward(e, p.I, p.b1), p.H)
    return float(softmax_loss_forward(np.atleast_2d(h), p.U, p.b2, np.array([y]))[0][0])


def check_step(p, x, y, h_prev, eps=EPS):
    """Rows for the seed's eight per-step quantities of J(t)."""
    g = step_gradients(p, x, y, h_prev)
    e, _ = embedding_forward(np.array([x]), p.L)
    h, _ = rnn_step_forward(h_prev[None, :], rnn_input_forward(e, p.I, p.b1), p.H)
    h = h[0].copy()

    def J():
        return step_loss(p, x, y, h_prev)

    numeric = {
        "U": central_difference(J, p.U, eps),
        "h": central_difference(lambda: step_loss(p, x, y, h_prev, h=h), h, eps),
        "b2": central_difference(J, p.b2, eps),
        "b1": central_difference(J, p.b1, eps),
        "L_x": central_difference(J, p.L, eps)[x],
        "I": central_difference(J, p.I, eps),
        "H": central_difference(J, p.H, eps),
        "h_prev": central_difference(J, h_prev, eps),
    }
    return [_row(name, g[name], numeric[name]) for name in numeric]


def gradcheck(V=11, d=5, Dh=7, B=3, T=4, seed=0, step=False):
    """Check a random float64 instance. ``step``: the seed's eight per-step
    quantities at one position; otherwise every parameter's full BPTT
    gradient over B streams of T steps. Returns a list of ``Row``."""
    p, inputs, targets, h0 = random_instance(V, d, Dh, B, T, seed)
    if step:
        return check_step(p, int(inputs[0, 0]), int(targets[0, 0]), h0[0].copy())
    return check_bptt(p, inputs, targets, h0)


def format_table(rows, tol=1e-6) -> str:
    lines = [f"{'parameter':<10} {'shape':<12} {'max rel error':>14} {'max abs error':>14}  result",
             "-" * 60]
    for r in rows:
        verdict = "pass" if r.max_rel_error < tol else "FAIL"
        lines.append(f"{r.name:<10} {str(r.shape):<12} {r.max_rel_error:>14.3e} "
                     f"{r.max_abs_error:>14.3e}  {verdict}")
    ok = sum(r.max_rel_error < tol for r in rows)
    lines.append(f"{ok}/{len(rows)} pass (central differences, eps={EPS:g}, float64, tol {tol:g})")
    return "\n".join(lines)
