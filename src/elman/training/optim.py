"""Optimizers over a dict of arrays, with global-norm clipping: the machinery
every rule shares (dense, sparse and compiled updates, the cores, the
checkpoint's state); the rules themselves, SGD, Adagrad and Adam, are
``training.rules``.

Each optimizer updates the parameter arrays in place (the trainer owns one set
of arrays for the whole run) and exposes its state as plain arrays plus
JSON-able scalars, so a checkpoint can hold it without pickle and a resumed
run continues bit for bit.
"""
from __future__ import annotations

import math

import numpy as np

from elman.fast import kernels_optim as ko
from elman.fast.colgrad import ColumnProduct
from elman.fast.kernels_direct import ScatterGrad
from elman.errors import ElmanError
from elman.fast.threads import chunks, parallel_for
from elman.core.sparse import SparseGrad, sq_sum
from elman.training.nodeshare import Slice
from elman.training.nodesync import SparseParts


def global_norm(grads: dict) -> float:
    """The L2 norm of all gradients taken together, accumulated in float64."""
    return float(np.sqrt(_sq_norm(grads)))


def _sq_norm(grads: dict) -> float:
    return float(sum(g.sq_sum() if isinstance(g, (SparseGrad, SparseParts, ScatterGrad, ColumnProduct))
                     else sq_sum(g) for g in grads.values()))


def clip_by_global_norm(grads: dict, max_norm: float, norm: float | None = None) -> float:
    """Scale every gradient by the same factor so their joint norm is at most
    ``max_norm`` (0 disables clipping). Scaling all of them together keeps the
    update's direction, unlike clipping each tensor separately. Returns the
    norm before clipping (``norm``: known already, of more than ``grads``)."""
    norm = global_norm(grads) if norm is None else norm
    if max_norm > 0 and norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for g in grads.values():
            g *= g.dtype.type(scale)
    return norm


class Optimizer:
    """Base class: ``step`` clips, then applies the subclass's ``rule`` to
    each parameter, its gradient and its state arrays.

    A rule is element-wise, so it may run on any part of the arrays: a big
    dense parameter is cut into row blocks that the cores update side by
    side (the same numbers as in one piece), and a ``SparseGrad``'s rows or
    columns are taken out, updated and put back (the same numbers as a
    dense update, whose zero rows change nothing) unless the rule moves
    every entry anyway (``dense_only``: Adam's moments decay everywhere).

    ``plain`` {name: rate}: parameters that take plain SGD steps instead,
    p <- p - rate · (lr / lr0) · g (their rate follows the schedule's halvings),
    outside the clipping and with no state: the direct connections, as in
    RNNLM and faster-rnnlm (``elman.training.train`` says why).
    """

    name = ""
    slots: tuple = ()  # per-parameter state arrays, e.g. Adam's ("m", "v")
    dense_only = False
    compiled = True    # SGD's and Adagrad's rules through ``fast.kernels_optim`` (False: NumPy's, the reference)

    initial = 0.0   # the value every state array starts at
    deferred = None  # the updates ``step(..., later=...)`` left to make

    def __init__(self, params: dict, lr: float, clip: float = 0.0, plain: dict | None = None,
                 initial: float | None = None):
        self.lr = self.lr0 = float(lr)
        self.clip = float(clip)
        self.t = 0  # number of updates taken
        self.plain = dict(plain or {})
        if initial is not None:
            self.initial = float(initial)
        # Only float tensors learn (a model may carry integer tables, e.g. class bounds).
        self.state = {slot: {k: np.full_like(v, self.initial) for k, v in params.items()
                             if v.dtype.kind == "f" and k not in self.plain}
                      for slot in self.slots}

    def step(self, params: dict, grads: dict, across=None, later=()) -> float:
        """One update of ``params`` in place; returns the gradient norm before clipping.

        ``grads`` is scaled in place by the clipping. A NaN or infinite
        gradient raises FloatingPointError and leaves ``params`` untouched.
        ``across(sq, finite) -> (sq, finite)``: where ``grads`` are this
        process's slices of the gradients (``training.nodeshare``), the squared
        norm and finiteness of all the slices together.
        ``later``: names of tensors whose updates are not made here but left
        in ``self.deferred``, a list of functions, the biggest tensor's
        first (None: nothing was left): one a tensor, but a class softmax's
        dJ/dU, whose step is cut into spans of columns (``_later``). Any thread may call them, in any
        order; they read the rate and update count as they run, so all must
        have run before the next step or a change of ``lr``."""
        plain = {k: grads.pop(k) for k in self.plain if k in grads}
        for k, g in grads.items():      # the processes' parts (training.nodesync), summed for the rule
            if isinstance(g, SparseParts):
                grads[k] = g.total()
        sq, finite = _sq_norm(grads), _finite(plain)
        if across is not None:
            sq, finite = across(sq, finite)
        norm = clip_by_global_norm(grads, self.clip, math.sqrt(sq) if math.isfinite(sq) else sq)
        if not math.isfinite(norm) or not finite:
            plain_norm = global_norm(plain) if across is None else math.nan     # another's slice, maybe
            raise FloatingPointError(f"the gradient norm is {norm if not math.isfinite(norm) else plain_norm}")
        self.t += 1
        # The tensors' updates are independent: the cores share them, the
        # biggest first (a tensor's numbers do not depend on which core).
        updates = [(k, g, lambda k=k, g=g: self._plain_step(params[k], g, k)) for k, g in plain.items()]
        updates += [(k, g, lambda k=k, g=g: self._update(params[k], g, k)) for k, g in grads.items()]
        updates.sort(key=lambda u: -_size(u[1]))
        now = [u for u in updates if u[0] not in later]
        rest = [piece for k, g, update in updates if k in later for piece in self._later(params[k], g, k, update)]
        parallel_for(lambda i: now[i][2](), len(now), serial=sum(_size(u[1]) for u in now) < SHARED_STEP)
        self.deferred = rest or None
        return norm

    def plain_factor(self, k: str, p) -> np.generic:
        """rate · (lr / lr0) of plain parameter ``k``: its step is p <- p - that · g."""
        return p.dtype.type(self.plain[k] * self.lr / self.lr0)

    def _plain_step(self, p, g, k: str) -> None:
        """p <- p - rate · (lr / lr0) · g; the processes' parts of g one after another."""
        c = self.plain_factor(k, p)
        if isinstance(g, ScatterGrad):          # the scatter that makes g, straight into p
            g.apply(p, c)
            return
        if isinstance(g, Slice):                # a dense gradient's stretch: the dense step on p's
            p, g = g.part(p, g.span), g.values
        if isinstance(g, SparseParts):
            for part in g.sparse_steps():
                part.put(p, part.take(p) - c * part.values)
        elif self.compiled and self._rows(lambda P, _, v, i: ko.sgd(P, v, i, c), p, g, {}):
            return
        elif isinstance(g, SparseGrad):
            g.put(p, g.take(p) - c * g.values)
        else:
            p -= np.multiply(g, c, out=g)       # in g's own memory: a temporary of a big table costs 2.5x the time

    def _update(self, p, g, k: str) -> None:
        """The rule on parameter ``k``, dense or sparse."""
        state = self._state(k)
        if isinstance(g, ColumnProduct):        # the rule takes the product column by column, or its array
            if self.compiled and self.product_rule(p, g, state):
                return
            g = g.sparse()
        if isinstance(g, ScatterGrad):
            g = g.dense()
        if isinstance(g, SparseGrad) and self.dense_only and not isinstance(g, Slice):
            g = g.dense()
        if self.compiled and self._rows(self.rows_rule, p, g, state):
            return
        if isinstance(g, SparseGrad):
            self._sparse_step(p, g, state)
        elif p.size < 1 << 18:
            self.rule(p, g, **state)
        else:
            self._dense_blocks(p, g, state)

    def _state(self, k: str) -> dict:
        """Parameter ``k``'s state arrays by slot."""
        return {slot: self.state[slot][k] for slot in self.slots}

    def _dense_blocks(self, p, g, state: dict) -> None:
        """The rule on blocks of a big array, shared by the cores: blocks
        along the axis memory runs slowest on (U's words, in ``Params``'
        layout), so each block is one stretch of memory."""
        ax = int(np.argmax(p.strides))
        blocks = chunks(p.shape[ax], 1)

        def cut(a, i):
            return a[(slice(None),) * ax + (blocks[i],)]

        parallel_for(lambda i: self.rule(cut(p, i), cut(g, i), **{n: cut(a, i) for n, a in state.items()}),
                     len(blocks))

    def _sparse_step(self, p, g: SparseGrad, state: dict) -> None:
        """The rule on a sparse gradient's rows or columns only: in place on
        views of each run of consecutive ids when they come in runs (a class
        softmax's classes), shared by the cores; else taken out through the
        index, updated and put back."""
        runs = g.runs()
        if runs is not None:
            def update(i):
                ps, vs = runs[i]
                self.rule(g.part(p, ps), g.part(g.values, vs), **{n: g.part(a, ps) for n, a in state.items()})

            parallel_for(update, len(runs), serial=g.values.size < 1 << 16)
            return
        part = {n: g.take(a) for n, a in state.items()}
        p_part = g.take(p)
        self.rule(p_part, g.values, **part)
        g.put(p, p_part)
        for n, a in part.items():
            g.put(state[n], a)

    def rule(self, p: np.ndarray, g: np.ndarray, **state) -> None:
        """Update ``p`` (and the state arrays) in place from ``g``."""
        raise NotImplementedError

    rows_rule = None    # the rule compiled: (P, state rows or None, vals, idx) -> bool, as kernels_optim's

    def product_parts(self, p, g: ColumnProduct, state: dict, n: int | None = None) -> list | None:
        """The rule compiled on a ``ColumnProduct`` (``fast.colgrad``) as n
        functions of no arguments, each the step of a span of columns, which
        any thread may call in any order (default: two a thread); None where
        there is none or the layout does not allow it."""
        return None

    def product_rule(self, p, g: ColumnProduct, state: dict) -> bool:
        """``product_parts``, shared by the cores; False, nothing done, where there is none."""
        parts = self.product_parts(p, g, state)
        if parts is None:
            return False
        parallel_for(lambda i: parts[i](), len(parts), serial=len(parts) == 1)
        return True

    @property
    def takes_products(self) -> bool:
        """Whether the rule steps a ``ColumnProduct`` from its factors (where the layout allows)."""
        return self.compiled and type(self).product_parts is not Optimizer.product_parts

    def _later(self, p, g, k: str, update) -> list:
        """An update left for later as pieces of work: a ``ColumnProduct``'s
        step cut into ``LATER_SPANS`` spans of columns, so that the thread
        that needs the weights first takes the spans the other has not begun
        (a class softmax's U at V = 800k: 20 ms of a 57 ms window on one
        thread); any other update whole."""
        if isinstance(g, ColumnProduct) and self.compiled:
            parts = self.product_parts(p, g, self._state(k), LATER_SPANS)
            if parts:
                return parts
        return [update]

    def _rows(self, rule, p, g, state: dict) -> bool:
        """The compiled ``rule`` on rows of p (``kernels_optim.rows_of``): a
        sparse gradient's rows or columns through its index, a dense one's
        every row; big ones cut into blocks of rows that the cores share
        (rows never repeat, so blocks are independent). False, with nothing
        done, where there is no compiled rule or it does not take the layout."""
        if rule is None or len(state) > 1 or np.ndim(p) not in (1, 2):
            return False
        sparse = isinstance(g, SparseGrad)
        axis = g.axis if sparse else ko.dense_axis(p)
        P, vals = ko.rows_of(p, axis), ko.rows_of(g.values if sparse else g, axis)
        S = ko.rows_of(next(iter(state.values())), axis) if state else None
        idx = g.index if sparse else None
        if not all(ko.flat(a) is not None for a in (P, S) if a is not None) or not ko.compiled(P, vals):
            return False
        blocks = chunks(len(vals), max(1, ko.BLOCK // max(vals.shape[1], 1)))

        def block(i):
            b = blocks[i]
            rows = (P, S) if sparse else (P[b], None if S is None else S[b])
            rule(*rows, vals[b], idx[b] if sparse else None)
        parallel_for(block, len(blocks), serial=len(blocks) == 1 or vals.size < SHARED_STEP)
        return True

    # -- state for the checkpoint ----------------------------------------------

    def state_arrays(self) -> dict:
        """Per-parameter state as ``{"<slot>.<param>": array}``."""
        return {f"{slot}.{k}": a for slot, arrays in self.state.items() for k, a in arrays.items()}

    def state_scalars(self) -> dict:
        return {"name": self.name, "lr": self.lr, "clip": self.clip, "t": self.t, "lr0": self.lr0,
                **({"initial": self.initial} if self.slots else {})}

    def load_state(self, arrays: dict, scalars: dict) -> None:
        if scalars.get("name") != self.name:
            raise ElmanError(f"the checkpoint holds {scalars.get('name')!r} optimizer state, "
                             f"not {self.name!r}; resume with --optimizer {scalars.get('name')}")
        self.lr, self.clip, self.t = float(scalars["lr"]), float(scalars["clip"]), int(scalars["t"])
        self.lr0 = float(scalars.get("lr0", self.lr0))     # older files: the starting rate given
        # Older files started their state at 0; the arrays below carry it either way.
        self.initial = float(scalars.get("initial", 0.0)) if self.slots else self.initial
        for slot, own in self.state.items():
            for k, a in own.items():
                saved = arrays.get(f"{slot}.{k}")
                if saved is None or saved.shape != a.shape:
                    raise ElmanError(f"the checkpoint's optimizer state lacks {slot}.{k} "
                                     f"of shape {a.shape}")
                a[...] = saved


def _size(g) -> int:
    if isinstance(g, SparseParts):
        return sum(values.size for _, values in g.parts)
    return g.values.size if isinstance(g, SparseGrad) else g.size


def _finite(plain: dict) -> bool:
    """Whether the plain steps' gradients are finite: a ``ScatterGrad`` by
    its values (its table is never built), the others by their norm."""
    return all(g.finite() if isinstance(g, ScatterGrad) else math.isfinite(global_norm({k: g}))
               for k, g in plain.items())


# Entries below which a step's updates stay on the calling thread: handing
# them to the cores costs more than it saves (sampled softmax, V = 10k,
# S = 1000, B = 32, T = 20, two threads: Adagrad's step of a window 0.8 ms
# on one, 1.1-1.25 ms shared; SGD's 0.5 ms against 0.95).
SHARED_STEP = 1 << 20
LATER_SPANS = 8     # a deferred column step's pieces: two threads finish within an eighth of it
