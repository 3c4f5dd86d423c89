"""The optimizers' rules on the base machinery of ``training.optim``: SGD,
Adagrad, Adam (and its lazy form), each an element-wise ``rule`` in NumPy
(the reference), with SGD's and Adagrad's also compiled (``rows_rule``,
``product_parts``: ``fast.kernels_optim``, ``fast.colgrad``).
"""
from __future__ import annotations

import threading

import numpy as np

from elman.errors import ElmanError
from elman.fast import kernels_optim as ko, scratch
from elman.training.optim import Optimizer


def _tmp(name: str, like: np.ndarray) -> np.ndarray:
    """A reused temporary shaped like ``like`` and laid out as it is in
    memory (a block of U's columns is word by word: a row-major temporary
    would make every element-wise pass a transposition), one set per
    thread (``scratch``)."""
    key = f"optim {name} {threading.get_ident()}"
    if like.ndim == 2 and like.strides[0] < like.strides[1]:
        return scratch.empty(key, like.shape[::-1], like.dtype).T
    return scratch.empty(key, like.shape, like.dtype)


# Elements an element-wise rule takes at a time: its temporaries (256 KB in
# float32) then stay in the core's cache, so an update reads g and p and
# writes p once, where temporaries of a whole block would add two passes
# through memory (at V = 800k a class softmax's columns are 111 MB a step).
PIECE = 1 << 16


def _pieces(p):
    """Index tuples cutting p into pieces of about PIECE elements along the
    axis memory runs slowest on (each piece one stretch of memory)."""
    if p.size <= PIECE or p.ndim == 0:
        return [...]
    ax = int(np.argmax(p.strides))
    n = p.shape[ax]
    step = max(1, PIECE * n // p.size)
    return [(slice(None),) * ax + (slice(i, i + step),) for i in range(0, n, step)]


def _spans(parts, rates) -> list | None:
    """``ColumnProduct.step_parts``' (run, n) as n functions of no arguments,
    each reading the rates ``rates()`` as it runs."""
    if parts is None:
        return None
    run, n = parts
    return [lambda t=t: run(t, *rates()) for t in range(n)]


# G0 of Adagrad, chosen by quality on KJV and WikiText-2 (README, "Training").
ADAGRAD_INITIAL = 1e-7


class SGD(Optimizer):
    """p <- p - lr g."""

    name = "sgd"

    def rule(self, p, g):
        lr = p.dtype.type(self.lr)
        for i in _pieces(p):
            p[i] -= np.multiply(g[i], lr, out=_tmp("a", g[i]))

    def rows_rule(self, P, _, vals, idx):
        return ko.sgd(P, vals, idx, self.lr)

    def product_parts(self, p, g, state, n=None):
        return _spans(g.step_parts(p, None, n), lambda: (self.lr, 0.0))


class Adagrad(Optimizer):
    """Per-coordinate steps lr / sqrt(G0 + sum of squared gradients): rare
    words keep large steps while frequent ones settle (Duchi et al. 2011).

    G0 (``initial``, as TensorFlow's initial_accumulator_value) bounds the
    first step of a tiny gradient: with G0 = 0 it is lr·sign(g) whatever |g|,
    so a gradient that is zero but for rounding (a rare word's row, summed
    in another order on another number of processes) moved a full step one
    way or the other."""

    name = "adagrad"
    slots = ("G",)
    eps = 1e-8
    initial = ADAGRAD_INITIAL

    def rule(self, p, g, G):
        for i in _pieces(p):
            self._piece(p[i], g[i], G[i])

    def rows_rule(self, P, G, vals, idx):
        return ko.adagrad(P, G, vals, idx, self.lr, self.eps)

    def product_parts(self, p, g, state, n=None):
        return _spans(g.step_parts(p, state["G"], n), lambda: (self.lr, self.eps))

    def _piece(self, p, g, G):
        a, b = _tmp("a", g), _tmp("b", g)
        G += np.multiply(g, g, out=a)
        np.sqrt(G, out=a)
        a += p.dtype.type(self.eps)
        p -= np.divide(np.multiply(g, p.dtype.type(self.lr), out=b), a, out=b)   # lr g / (sqrt(G) + eps)


class Adam(Optimizer):
    """Bias-corrected moving averages of g and g^2 (Kingma & Ba 2015)."""

    name = "adam"
    slots = ("m", "v")
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    dense_only = True

    def rule(self, p, g, m, v):
        dt = p.dtype.type
        m *= dt(self.beta1)
        m += dt(1 - self.beta1) * g
        v *= dt(self.beta2)
        v += dt(1 - self.beta2) * (g * g)
        m_hat = m / dt(1 - self.beta1 ** self.t)
        v_hat = v / dt(1 - self.beta2 ** self.t)
        p -= dt(self.lr) * m_hat / (np.sqrt(v_hat) + dt(self.eps))


class LazyAdam(Adam):
    """Adam whose moments move only where the gradient is not known to be
    zero, as PyTorch's SparseAdam: a ``SparseGrad``'s rows or columns (the
    embedding rows of a window's words, a class softmax's classes present,
    sampled softmax's ids) get Adam's rule with the global step count t in
    the bias correction; the other entries, parameter and moments, are left
    as they are, where Adam would decay their moments and still move them.
    Dense gradients get Adam's update exactly. Opt-in (``--optimizer
    lazyadam``): it is a different optimizer, not a faster Adam, but its
    cost follows the rows and columns a window touches instead of V."""

    name = "lazyadam"
    dense_only = False


OPTIMIZERS = {cls.name: cls for cls in (SGD, Adagrad, Adam, LazyAdam)}

# Measured on the KJV demo corpus and WikiText-2 (README, "Training"): good
# starting rates for the per-position mean loss the trainer minimises.
DEFAULT_LR = {"sgd": 8.0, "adagrad": 0.1, "adam": 0.002, "lazyadam": 0.002}


def make_optimizer(name: str, params: dict, lr: float | None = None, clip: float = 0.0,
                   plain: dict | None = None, initial: float | None = None) -> Optimizer:
    """``initial``: where the state arrays start (None: the optimizer's own, Adagrad's G0)."""
    if name not in OPTIMIZERS:
        raise ElmanError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, DEFAULT_LR[name] if lr is None else lr, clip, plain, initial)
