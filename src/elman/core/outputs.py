"""The output layer's interface, its named results, and the full softmax
in reference form.

An output layer turns the hidden states h (N,Dh) and the targets y (N,)
into the losses J_n = -log P(y_n | h_n) and back into gradients. Every
layer, in reference form (NumPy, here in ``core``) and in fast form
(``elman.fast``), offers the same methods with the same argument order:

    losses(p, h, y, direct=None, overlap=None) -> Forward(losses (N,), cache, done)
    backward(dloss, cache, overlap=None)        -> Backward(dh (N,Dh), grads {name: array}, done)
    deltas(dloss, cache)                        -> the logits' gradient, one of the Deltas forms
    log_probs(p, h, extra=None)                 -> log P(w | h) for every word (N,V)
    scores(p, h, y, direct=None, overlap=None)  -> (losses (N,), done): no cache (scoring)
    width(p)                                    -> logits a row computes (bounds evaluation's memory)
    units(p, y)                                 -> logits a row with target y computes, mean over y
    logit_spaces(p)                             -> the logits it reads: [Space]
    onnx_nodes(p, inits, helper)                -> ONNX nodes from its logits to "log_probs"
    onnx_sparse(p)                              -> salts of the spaces the scoring graph does not form
    onnx_score_nodes(p, inits, helper, terms)   -> ONNX nodes from its logits and "targets" to "log_prob"

``dloss`` is a scalar or one weight per row: the gradients are those of
Σ_n dloss_n·J_n. ``direct``: a component that adds terms to the logits
before any exp (``elman.fast.direct.Features``: ``add_words(z, c, rows)``
and ``add_classes(z, c, rows)``, c a slice of ids, rows of h or None);
its own gradient is computed from ``deltas``. ``overlap``: a function run
on one core while the others work (forward: of no arguments; backward: of
dJ/dh); ``done`` is its result, or None. ``grads`` maps the names of
``Params`` tensors to dense arrays or ``SparseGrad``s.

Class attributes: ``name``, the model file's ``"output"`` entry;
``tensors``, the Params tensors the layer owns besides U and b2 (which
every layer reads); ``training_only``: a training loss of another layer's
model (sampled softmax trains the full softmax), never a model's output.
"""
from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import numpy as np

from elman.core.direct import WORDS
from elman.core.layers import log_softmax_rows, logits_forward


class Forward(NamedTuple):
    losses: np.ndarray       # (N,) -log P(y_n | h_n), the dtype of h
    cache: Any               # what ``backward`` and ``deltas`` read
    done: Any = None         # overlap() or None


class Backward(NamedTuple):
    dh: np.ndarray           # (N,Dh)
    grads: dict              # Params name -> dense array or SparseGrad
    done: Any = None         # overlap(dh) or None


class Space(NamedTuple):
    """A block of logits a layer reads: z = h W + bias (N,width), and the
    direct connections' salt for it (``core.direct.WORDS`` or ``CLASSES``)."""
    graph_name: str          # its name in the ONNX graph
    weight: str              # Params tensor names
    bias: str
    width: int
    salt: int


# The forms of dJ/dz a layer's ``deltas`` returns; the direct component
# turns any of them into dJ/dD.
class ChunkDeltas(NamedTuple):
    """dJ/dz[:, c] = D_c ⊙ w (row n times w_n) for (c, D_c) in parts; all V columns."""
    parts: list
    w: np.ndarray


class BlockDeltas(NamedTuple):
    """Blocks (space, rows, c, dz): dJ/dz of the logits ``space`` ("words" or
    "classes"), columns c (a slice), rows of h (None: all); zero elsewhere."""
    parts: list


class ColumnDeltas(NamedTuple):
    """dJ/dz[n, y_n] = dtrue[n] and dJ/dz[n, samples[k]] = dO[n, k]; zero elsewhere."""
    y: np.ndarray
    samples: np.ndarray
    dtrue: np.ndarray
    dO: np.ndarray


class OutputLayer:
    """The interface (see the module docstring); subclasses implement it."""

    name: ClassVar[str] = ""
    tensors: ClassVar[tuple] = ()
    training_only: ClassVar[bool] = False

    def losses(self, p, h, y, direct=None, overlap=None) -> Forward:
        raise NotImplementedError

    def backward(self, dloss, cache, overlap=None) -> Backward:
        raise NotImplementedError

    def deltas(self, dloss, cache):
        raise NotImplementedError

    def log_probs(self, p, h, extra=None) -> np.ndarray:
        raise NotImplementedError

    def width(self, p) -> int:
        return p.V

    def units(self, p, y) -> float:
        """The mean number of output units (logits) the loss of a position
        with target y computes (``elman bench`` counts FLOPs with it)."""
        return float(p.V)

    def logit_spaces(self, p) -> list:
        return [Space("z", "U", "b2", p.V, WORDS)]

    def onnx_nodes(self, p, inits: dict, helper) -> list:
        return [helper.make_node("LogSoftmax", ["z"], ["log_probs"], axis=-1)]

    def onnx_sparse(self, p) -> tuple:
        """The salts of the logit spaces the scoring graph computes only for
        the targets' words (from "hid" [B,T,Dh] and ``terms``), not all of."""
        return ()

    def onnx_score_nodes(self, p, inits: dict, helper, terms=None) -> list:
        """Nodes from the logits and "targets" (int64 [B,T]) to "log_prob"
        [B,T], log P(targets | h): here ``onnx_nodes``' log-probabilities,
        gathered (any layer; no saving). A layer with ``onnx_sparse`` spaces
        reads ``terms`` (``inference.onnx_scores``: the direct terms of some
        words at some positions, None without direct connections)."""
        inits["score_last"] = np.array([-1], np.int64)
        return self.onnx_nodes(p, inits, helper) + [
            helper.make_node("Unsqueeze", ["targets", "score_last"], ["score_targets"]),
            helper.make_node("GatherElements", ["log_probs", "score_targets"], ["score_lp"], axis=2),
            helper.make_node("Squeeze", ["score_lp", "score_last"], ["log_prob"])]

    @classmethod
    def example(cls, p, rng) -> "OutputLayer":
        """An instance for ``p``, drawing with ``rng`` whatever data of its
        own a call takes (the shared tests run every layer through this)."""
        return cls()

    def scores(self, p, h, y, direct=None, overlap=None):
        """(losses (N,), overlap() or None): ``losses`` without a cache, for
        scoring (no gradient follows); a layer may compute them its own way."""
        fwd = self.losses(p, h, y, direct=direct, overlap=overlap)
        return fwd.losses, fwd.done

    begin_reads = False     # whether ``begin`` reads the layer's weights or the direct ones

    def begin(self, direct, y) -> None:
        """Called before the forward pass, while nothing else runs: work that
        needs neither h nor the recurrence may start here (on another core)."""


def run_overlap(overlap, *args):
    """overlap(*args), or None without one (the layers' ``done``)."""
    return overlap(*args) if overlap is not None else None


def _direct_words(z, direct, rows=None):
    if direct is not None:
        direct.add_words(z, slice(0, z.shape[1]), rows)
    return z


class FullSoftmax(OutputLayer):
    """yhat = softmax(h U + b2), J_n = -log yhat[n, y_n]: the seed's output
    layer (``core.layers.softmax_loss_forward``), all V logits of a row."""

    name = "full"

    def losses(self, p, h, y, direct=None, overlap=None) -> Forward:
        y = np.asarray(y)
        z = _direct_words(logits_forward(h, p.U, p.b2), direct)
        logp = log_softmax_rows(z)
        return Forward(-logp[np.arange(len(y)), y], (h, p.U, np.exp(logp), y), run_overlap(overlap))

    def _dz(self, dloss, cache):
        """dJ/dz2 = (yhat - onehot(y)) ⊙ dloss        (N,V)"""
        h, U, yhat, y = cache
        dz = yhat.copy()
        dz[np.arange(len(y)), y] -= 1.0
        dz *= np.reshape(np.asarray(dloss, dz.dtype), (-1, 1))
        return dz

    def backward(self, dloss, cache, overlap=None) -> Backward:
        """dJ/dh = dz Uᵀ (N,V)(V,Dh), dJ/dU = hᵀ dz (Dh,N)(N,V), dJ/db2 = Σ_rows dz (V,)."""
        h, U = cache[0], cache[1]
        dz = self._dz(dloss, cache)
        dh = dz @ U.T
        return Backward(dh, {"U": h.T @ dz, "b2": dz.sum(axis=0)}, run_overlap(overlap, dh))

    def deltas(self, dloss, cache) -> BlockDeltas:
        dz = self._dz(dloss, cache)
        return BlockDeltas([("words", None, slice(0, dz.shape[1]), dz)])

    def log_probs(self, p, h, extra=None) -> np.ndarray:
        z = logits_forward(np.atleast_2d(h), p.U, p.b2)
        if extra is not None:
            z += extra[0]
        return log_softmax_rows(z)
