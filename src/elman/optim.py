"""Optimizers over a dict of arrays: SGD, Adagrad, Adam, with global-norm clipping.

Each optimizer updates the parameter arrays in place (the trainer owns one set
of arrays for the whole run) and exposes its state as plain arrays plus
JSON-able scalars, so a checkpoint can hold it without pickle and a resumed
run continues bit for bit.
"""
from __future__ import annotations

import math

import numpy as np

from elman import scratch
from elman.errors import ElmanError
from elman.sparse import SparseGrad


def global_norm(grads: dict) -> float:
    """The L2 norm of all gradients taken together, accumulated in float64."""
    return float(np.sqrt(sum(g.sq_sum() if isinstance(g, SparseGrad) else float(np.dot(g.ravel(), g.ravel()))
                             for g in grads.values())))


def clip_by_global_norm(grads: dict, max_norm: float) -> float:
    """Scale every gradient by the same factor so their joint norm is at most
    ``max_norm`` (0 disables clipping). Scaling all of them together keeps the
    update's direction, unlike clipping each tensor separately. Returns the
    norm before clipping."""
    norm = global_norm(grads)
    if max_norm > 0 and norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for g in grads.values():
            g *= g.dtype.type(scale)
    return norm


class Optimizer:
    """Base class: ``step`` clips, then applies the rule of the subclass."""

    name = ""
    slots: tuple = ()  # per-parameter state arrays, e.g. Adam's ("m", "v")

    def __init__(self, params: dict, lr: float, clip: float = 0.0):
        self.lr = float(lr)
        self.clip = float(clip)
        self.t = 0  # number of updates taken
        # Only float tensors learn (a model may carry integer tables, e.g. class bounds).
        self.state = {slot: {k: np.zeros_like(v) for k, v in params.items() if v.dtype.kind == "f"}
                      for slot in self.slots}

    def step(self, params: dict, grads: dict) -> float:
        """One update of ``params`` in place; returns the gradient norm before clipping.

        ``grads`` is scaled in place by the clipping. A NaN or infinite
        gradient raises FloatingPointError and leaves ``params`` untouched."""
        norm = clip_by_global_norm(grads, self.clip)
        if not math.isfinite(norm):
            raise FloatingPointError(f"the gradient norm is {norm}")
        self.t += 1
        for k, g in grads.items():
            self._update(k, params[k], g)
        return norm

    def _update(self, k: str, p: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError

    # -- state for the checkpoint ----------------------------------------------

    def state_arrays(self) -> dict:
        """Per-parameter state as ``{"<slot>.<param>": array}``."""
        return {f"{slot}.{k}": a for slot, arrays in self.state.items() for k, a in arrays.items()}

    def state_scalars(self) -> dict:
        return {"name": self.name, "lr": self.lr, "clip": self.clip, "t": self.t}

    def load_state(self, arrays: dict, scalars: dict) -> None:
        if scalars.get("name") != self.name:
            raise ElmanError(f"the checkpoint holds {scalars.get('name')!r} optimizer state, "
                             f"not {self.name!r}; resume with --optimizer {scalars.get('name')}")
        self.lr, self.clip, self.t = float(scalars["lr"]), float(scalars["clip"]), int(scalars["t"])
        for slot, own in self.state.items():
            for k, a in own.items():
                saved = arrays.get(f"{slot}.{k}")
                if saved is None or saved.shape != a.shape:
                    raise ElmanError(f"the checkpoint's optimizer state lacks {slot}.{k} "
                                     f"of shape {a.shape}")
                a[...] = saved


def sgd_update(p: np.ndarray, g, lr: float) -> None:
    """p <- p - lr g in place; for a ``SparseGrad``, on its rows or columns only."""
    if isinstance(g, SparseGrad):
        g.put(p, g.take(p) - p.dtype.type(lr) * g.values)
    else:
        p -= np.multiply(g, p.dtype.type(lr), out=scratch.empty("optim step", g.shape, g.dtype))


class SGD(Optimizer):
    """p <- p - lr g."""

    name = "sgd"

    def _update(self, k, p, g):
        sgd_update(p, g, self.lr)


class Adagrad(Optimizer):
    """Per-coordinate steps lr / sqrt(sum of squared gradients): rare words
    keep large steps while frequent ones settle (Duchi et al. 2011)."""

    name = "adagrad"
    slots = ("G",)
    eps = 1e-8

    def _update(self, k, p, g):
        lr, eps = p.dtype.type(self.lr), p.dtype.type(self.eps)
        if isinstance(g, SparseGrad):           # the entries a zero gradient would leave alone
            G = g.take(self.state["G"][k]) + g.values * g.values
            g.put(self.state["G"][k], G)
            g.put(p, g.take(p) - lr * g.values / (np.sqrt(G) + eps))
        else:                                   # the same, in two reused buffers
            G = self.state["G"][k]
            a, b = (scratch.empty(f"optim {i}", g.shape, g.dtype) for i in "ab")
            G += np.multiply(g, g, out=a)
            np.sqrt(G, out=a)
            a += eps
            p -= np.divide(np.multiply(g, lr, out=b), a, out=b)


class Adam(Optimizer):
    """Bias-corrected moving averages of g and g^2 (Kingma & Ba 2015)."""

    name = "adam"
    slots = ("m", "v")
    beta1, beta2, eps = 0.9, 0.999, 1e-8

    def _update(self, k, p, g):
        if isinstance(g, SparseGrad):           # every moment decays, touched or not
            g = g.dense()
        m, v = self.state["m"][k], self.state["v"][k]
        dt = p.dtype.type
        m *= dt(self.beta1)
        m += dt(1 - self.beta1) * g
        v *= dt(self.beta2)
        v += dt(1 - self.beta2) * (g * g)
        m_hat = m / dt(1 - self.beta1 ** self.t)
        v_hat = v / dt(1 - self.beta2 ** self.t)
        p -= dt(self.lr) * m_hat / (np.sqrt(v_hat) + dt(self.eps))


OPTIMIZERS = {cls.name: cls for cls in (SGD, Adagrad, Adam)}

# Measured on the KJV demo corpus and WikiText-2 (README, "Training"): good
# starting rates for the per-position mean loss the trainer minimises.
DEFAULT_LR = {"sgd": 8.0, "adagrad": 0.1, "adam": 0.002}


def make_optimizer(name: str, params: dict, lr: float | None = None, clip: float = 0.0) -> Optimizer:
    if name not in OPTIMIZERS:
        raise ElmanError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, DEFAULT_LR[name] if lr is None else lr, clip)
