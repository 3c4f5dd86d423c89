"""Dynamic evaluation: the model keeps learning from the text it has scored.

Mikolov's RNNLM ``-dynamic LR`` and Krause et al. 2018: the text is read
in order; each segment is first scored with the weights as they are, then
the weights take one step on that segment's loss, so every token is
predicted from weights that have seen only the text before it (no look
ahead: a token's probability does not depend on anything after its
segment's end, nor on the rest of its own segment after it).

    θ <- θ - lr · ∇θ Σ_(t in segment) J(t) / s  +  decay · (θ0 - θ)

The step is on the *sum* of the segment's losses, so LR is a rate per
token, as RNNLM's. s is 1 (plain SGD, RNNLM's rule) or, as in Krause et
al., each weight's root-mean-square gradient in training: here the
training's own Adagrad statistics, s = sqrt(G / t) over its t updates
(floored at FLOOR times its tensor's mean: unfloored, rare words' tiny
sums blew their steps up),
which ``training_scale`` reads from the run's ``DIR/last``. The decay pulls
the weights back towards the trained ones θ0, so what one passage taught
fades when the text moves on. The direct weights D take plain SGD steps at
their own rate and no decay (as measured). The gradient is the model's
exact one (the full or the class softmax: a model trained with sampled
softmax is a full-softmax model), computed by ``bptt`` from the state the
scoring pass started from, sparse where the model's gradients are. Only a
copy of the weights changes: the model file, and the caller's Params, stay
as they were.

``adapted_stream_losses``: the text as one stream (``elman eval``), segments of T
tokens from the model's starting state, the state and the direct
connections' history carried as in ``perplexity``. ``line_losses``: each line on its own from h0 = 0 after
``<eos>`` (``elman score``), one step per line once it is scored.
"""
from __future__ import annotations

import numpy as np

from elman.core.classes import word_classes
from elman.core.direct import contexts, next_history
from elman.model import bptt, initial_state
from elman.core.sparse import SparseGrad
from elman.inference.options import DYNAMIC_DEFAULTS

FLOOR = 1.0             # s >= FLOOR * mean(s) of its tensor


class Adapter:
    """The step rule above on ``params`` (a dict of arrays, changed in place).

    The decay is lazy where a segment reads a small part of a tensor: the
    rows of L (its inputs) and, with a class softmax, the columns of U and
    b2 (its targets' classes). Untouched for n segments, a weight is

        θ = θ0 + (θ_then - θ0)·(1 - decay)^n

    so each row (class) keeps the segment it was last brought to, and
    ``ready`` brings the ones a segment reads up to date before it reads
    them; the rest of the tensor costs nothing. Every other tensor decays
    after each step, as the rule is written."""

    def __init__(self, params: dict, lr: float, direct_lr: float | None = None, decay: float = 0.0,
                 scale: dict | None = None, bounds=None):
        self.params, self.lr, self.direct_lr, self.decay, self.scale = params, lr, direct_lr, decay, scale
        self.theta0 = {k: v.copy() for k, v in params.items() if v.dtype.kind == "f" and k != "D"} if decay else {}
        self.k = 0                                           # segments stepped
        self.bounds = bounds                                 # a class softmax's classes: U and b2 lazy too
        self.rows = np.zeros(len(params["L"]), np.int64) if decay and "L" in params else None
        self.classes = np.zeros(len(bounds) - 1, np.int64) if decay and bounds is not None else None
        self.lazy = {"L"} if self.rows is not None else set()
        if self.classes is not None:
            self.lazy |= {"U", "b2"}

    def ready(self, x, classes=None) -> None:
        """Bring up to date the rows of L for the ids ``x`` and, with a class
        softmax, the columns of U and b2 of the class ids ``classes``."""
        if self.rows is not None:
            ids = np.unique(x)
            self._catch_up(["L"], ids, self.k - self.rows[ids], 0)
            self.rows[ids] = self.k
        if self.classes is not None and classes is not None:
            cs = np.unique(classes)
            behind = self.k - self.classes[cs]
            for c, n in zip(cs[behind > 0].tolist(), behind[behind > 0].tolist()):
                cols = slice(int(self.bounds[c]), int(self.bounds[c + 1]))
                self._catch_up(["U", "b2"], cols, n, -1)
            self.classes[cs] = self.k

    def _catch_up(self, names, idx, behind, axis: int) -> None:
        """θ = θ0 + (θ - θ0)·(1 - decay)^behind on ``idx`` of each tensor (rows, or columns)."""
        if np.ndim(behind):
            keep = behind > 0
            idx, behind = idx[keep], behind[keep]
            if not len(idx):
                return
        for name in names:
            p, p0 = self.params[name], self.theta0[name]
            f = np.power(1.0 - self.decay, behind).astype(p.dtype)
            if axis == 0:
                p[idx] = p0[idx] + (p[idx] - p0[idx]) * (f[:, None] if np.ndim(f) else f)
            else:
                p[..., idx] = p0[..., idx] + (p[..., idx] - p0[..., idx]) * f

    def step(self, grads: dict) -> None:
        for name, g in grads.items():
            p = self.params[name]
            direct = name == "D"
            rate = p.dtype.type(self.direct_lr if direct and self.direct_lr is not None else self.lr)
            s = None if direct or self.scale is None else self.scale[name]
            if isinstance(g, SparseGrad):
                step = rate * g.values if s is None else rate * g.values / g.take(s)
                g.put(p, g.take(p) - step)
            else:
                p -= rate * g if s is None else rate * g / s
        for name, p0 in self.theta0.items():
            if name in self.lazy:
                continue
            p = self.params[name]
            pull = np.subtract(p0, p)
            pull *= p.dtype.type(self.decay)
            p += pull
        self.k += 1

    def finish(self) -> None:
        """Every lazy weight brought up to date (the params as the eager rule leaves them)."""
        if self.rows is not None:
            self.ready(np.arange(len(self.rows)), None if self.classes is None else np.arange(len(self.classes)))


def sgd_step(params: dict, grads: dict, lr: float, direct_lr: float | None = None) -> None:
    """p <- p - lr g for every gradient, dense or ``SparseGrad``, in place;
    the direct weights D at ``direct_lr`` (None: ``lr``)."""
    Adapter(params, lr, direct_lr).step(grads)


def training_scale(model_dir, p) -> tuple[dict | None, str, int]:
    """``(s, how, positions)``: s {name: array} for every weight but D, the RMS gradient
    per update sqrt(G / t) from the Adagrad sums G over t updates that
    ``DIR/last`` holds (the state ``--resume`` reads), or None and why not (no
    training state, another optimizer, other shapes); ``positions``: B·T
    of the training's updates (0 when not known). Dividing by t makes
    one rate fit runs of any length: sqrt(G) alone grows with the run, and
    a rate measured on a long run (KJV, 14,641 updates) made a short one's
    steps 3× too big (WikiText-2, 1,525: it diverged without decay)."""
    from pathlib import Path

    from elman import modelfile
    from elman.errors import ElmanError
    last = Path(model_dir) / modelfile.LAST
    if not (last / modelfile.CONFIG_FILE).exists():
        return None, f"no training state in {last}", 0
    try:
        _, _, cfg, arrays = modelfile.load_checkpoint(model_dir, "last")
        t = int(cfg["train_state"]["optimizer"]["t"])
        positions = int(cfg["settings"]["streams"]) * int(cfg["settings"]["steps"])
    except ElmanError as exc:
        return None, f"its training state is unreadable: {exc}", 0
    except (KeyError, TypeError, ValueError):
        return None, "its training state does not say how many updates of how many positions it took", 0
    if t < 1 or positions < 1:
        return None, "its training took no step yet", 0
    scale = {}
    for name, a in p.as_dict().items():
        if a.dtype.kind != "f" or name == "D":
            continue
        G = arrays.get(f"G.{name}")
        if G is None or G.shape != a.shape:
            return None, "it was not trained with Adagrad", 0
        r = np.sqrt(G.astype(a.dtype) / a.dtype.type(t))     # RMS gradient per update
        scale[name] = np.maximum(r, a.dtype.type(FLOOR * r.mean()))
    return scale, "scaled by the training's Adagrad statistics", positions


def settings(model_dir, p, lr: float | None = None, decay: float | None = None,
             direct_lr: float | None = None, plain: bool = False) -> tuple[dict, dict | None, str]:
    """``(how, scale, why)`` for ``--dynamic``: the rates not given take the
    defaults of the rule the model allows (scaled with Adagrad statistics,
    else plain SGD; ``plain`` forces the latter); ``how`` is what the JSON
    reports: lr, decay, scaled (and direct_lr for direct connections)."""
    scale, why, positions = (None, "plain SGD steps (--dynamic-plain)", 0) if plain else training_scale(model_dir, p)
    if scale is None and not plain:
        why = f"plain SGD steps: {why}"
    default = dict(DYNAMIC_DEFAULTS["plain" if scale is None else "scaled"])
    if scale is not None:
        default["lr"] /= positions
    how = {"lr": default["lr"] if lr is None else lr, "decay": default["decay"] if decay is None else decay,
           "scaled": scale is not None}
    if p.order:
        how["direct_lr"] = default["direct_lr"] if direct_lr is None else direct_lr
    return how, scale, why


def adapted_stream_losses(p, ids, eos_id: int, lr: float, T: int, direct_lr: float | None = None,
                          decay: float = 0.0, scale: dict | None = None, step=None, compiled: bool | None = None):
    """-ln P(token) (N,) float64 of ``ids`` read as one stream, adapting
    after each segment of T tokens (``step(n)``, when given, told of each).
    ``compiled`` (None: where the model allows, ``compiled_runs``): every
    segment of a block of ``BLOCK`` tokens in one compiled call
    (``fast.dynamic``), else segment by segment through ``bptt``."""
    p = p.copy()
    adapt = Adapter(p.as_dict(), lr, direct_lr, decay, scale, p.class_bounds)
    ids = np.asarray(ids, dtype=np.int64)
    x = np.concatenate([[eos_id], ids[:-1]])
    if compiled_runs(p) if compiled is None else compiled:
        return _compiled_stream(p, adapt, x, ids, T, step)
    h = initial_state(p, 1)
    history = None
    out = np.empty(len(ids))
    for s in range(0, len(ids), T):
        xs, ys = x[None, s:s + T], ids[None, s:s + T]
        adapt.ready(xs, _classes(p, ys))
        # One forward pass scores the segment and gives its gradient: the
        # losses are taken before the step.
        losses, grads, h_next = bptt(p, xs, ys, h, sparse=True, history=history, per_position=True)
        out[s:s + T] = losses[0]
        adapt.step(grads)
        if p.order:
            history = next_history(contexts(xs, history, p.order), p.order)
        h = h_next
        if step is not None:
            step(xs.shape[1])
    return out


BLOCK = 1 << 16         # tokens a compiled call adapts on: its direct offsets are 2·(N-1) int64 a token


def compiled_runs(p) -> bool:
    """Whether ``fast.dynamic`` runs ``p``: a class softmax scored compiled,
    direct connections (if any) hashed elman's way."""
    return bool(p.classes) and p.scoring == "compiled" and (p.D is None or p.direct_hash == "elman")


def _compiled_stream(p, adapt, x, ids, T: int, step) -> np.ndarray:
    from elman.fast.dynamic import CompiledSegments     # Numba's import: only this path pays it
    run = CompiledSegments(p, adapt)
    h = initial_state(p, 1)[0]
    n = max(T, BLOCK - BLOCK % T)
    out = np.empty(len(ids))
    for s in range(0, len(ids), n):
        e = min(s + n, len(ids))
        history = None if not p.order or s == 0 else x[max(s - p.order + 2, 0):s]
        out[s:e] = run(x[s:e], ids[s:e], np.r_[np.arange(0, e - s, T), e - s], h, history)
        if step is not None:
            step(e - s)
    return out


def line_losses(p, lines, lr: float, direct_lr: float | None = None, decay: float = 0.0,
                scale: dict | None = None, compiled: bool | None = None) -> list:
    """-ln P of each token of each line (a list of arrays, each line an id
    array ending in ``<eos>``), the lines in order, each from h0 = 0 with
    ``<eos>`` before it, one step on each line after it is scored."""
    return list(iter_line_losses(p, lines, lr, direct_lr, decay, scale, compiled))


def iter_line_losses(p, lines, lr: float, direct_lr: float | None = None, decay: float = 0.0,
                     scale: dict | None = None, compiled: bool | None = None):
    """``line_losses`` one line at a time, for lines read as they come (``elman score``);
    ``compiled``: as ``adapted_stream_losses``'s, one compiled call a line."""
    p = p.copy()
    adapt = Adapter(p.as_dict(), lr, direct_lr, decay, scale, p.class_bounds)
    run = None
    if compiled_runs(p) if compiled is None else compiled:
        from elman.fast.dynamic import CompiledSegments
        run = CompiledSegments(p, adapt)
    eos = None
    for line in lines:
        line = np.asarray(line, dtype=np.int64)
        eos = line[-1] if eos is None else eos       # every line ends in <eos>
        x = np.concatenate([[eos], line[:-1]])[None, :]
        if run is not None:
            yield run(x[0], line, np.array([0, len(line)]), np.zeros(p.Dh, p.dtype))
            continue
        h0 = np.zeros((1, p.Dh), dtype=p.dtype)
        adapt.ready(x, _classes(p, line))
        losses, grads, _ = bptt(p, x, line[None, :], h0, sparse=True, per_position=True)
        yield losses[0].astype(np.float64)
        adapt.step(grads)


def _classes(p, y):
    """The classes of the targets ``y`` (the columns of U a segment reads), None without classes."""
    return None if not p.classes else word_classes(p.class_bounds, np.ravel(y))
