"""The Elman RNN language model: parameters, one time step, and truncated BPTT.

Everything here is composed of the forward/backward pairs in ``layers``:
``step_gradients`` runs them on one position, ``bptt`` on B streams of T
steps, so each formula has exactly one implementation.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from elman.layers import (
    embedding_backward, embedding_forward, log_softmax_rows, logits_forward,
    output_backward, output_forward, rnn_input_forward, rnn_params_backward,
    rnn_step_backward, rnn_step_forward, sigmoid,
)

PARAM_NAMES = ("L", "I", "H", "U", "b1", "b2")


@dataclass
class Params:
    """The model's parameters, named and shaped as in the seed.

    L (V,d) embeddings, I (d,Dh) input weights, H (Dh,Dh) recurrent weights,
    U (Dh,V) output weights, b1 (Dh,) hidden bias, b2 (V,) output bias.
    """
    L: np.ndarray
    I: np.ndarray
    H: np.ndarray
    U: np.ndarray
    b1: np.ndarray
    b2: np.ndarray

    @classmethod
    def init(cls, V: int, d: int, Dh: int, seed: int = 0, dtype="float32") -> "Params":
        """A small random start.

        I, H, U: Glorot-uniform, bound sqrt(6/(fan_in+fan_out)), so the
        pre-activations start with unit-order variance whatever the sizes
        and the sigmoid is neither saturated (no gradient) nor linear.
        L: uniform in ±0.1, as in Mikolov's RNNLM: small inputs that do not
        dominate h(t-1) H at the start. b1, b2: zero; every unit and word
        starts alike and the data sets them.
        Drawn in float64 from ``numpy.random.default_rng(seed)``, then cast,
        so float32 and float64 models of one seed start from the same values.
        """
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, not {dtype}")
        rng = np.random.default_rng(seed)

        def glorot(n_in, n_out):
            bound = np.sqrt(6.0 / (n_in + n_out))
            return rng.uniform(-bound, bound, (n_in, n_out))

        arrays = dict(L=rng.uniform(-0.1, 0.1, (V, d)), I=glorot(d, Dh), H=glorot(Dh, Dh),
                      U=glorot(Dh, V), b1=np.zeros(Dh), b2=np.zeros(V))
        return cls(**{k: v.astype(dtype) for k, v in arrays.items()})

    # -- sizes and conversions
    @property
    def V(self) -> int:
        return self.L.shape[0]

    @property
    def d(self) -> int:
        return self.L.shape[1]

    @property
    def Dh(self) -> int:
        return self.H.shape[0]

    @property
    def dtype(self) -> np.dtype:
        return self.L.dtype

    def as_dict(self) -> dict:
        """name -> array for every tensor (the arrays themselves, not copies)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, arrays: dict) -> "Params":
        missing = [n for n in PARAM_NAMES if n not in arrays]
        if missing:
            raise ValueError(f"missing tensors: {', '.join(missing)}")
        p = cls(**{n: np.asarray(arrays[n]) for n in PARAM_NAMES})
        p.check_shapes()
        return p

    def check_shapes(self) -> None:
        V, d, Dh = self.V, self.d, self.Dh
        want = dict(L=(V, d), I=(d, Dh), H=(Dh, Dh), U=(Dh, V), b1=(Dh,), b2=(V,))
        for name, shape in want.items():
            got = getattr(self, name).shape
            if got != shape:
                raise ValueError(f"tensor {name} has shape {got}, expected {shape} "
                                 f"(V={V}, d={d}, Dh={Dh})")

    def copy(self) -> "Params":
        return type(self)(**{k: v.copy() for k, v in self.as_dict().items()})

    def astype(self, dtype) -> "Params":
        return type(self)(**{k: v.astype(dtype) for k, v in self.as_dict().items()})


# --------------------------------------------------------------- one step


def step_gradients(p: Params, x: int, y: int, h_prev) -> dict:
    """The seed's eight quantities at one time step t, as gradients of
    J(t) = -log yhat(t)[y]:

    ===========  ========  ==================================================
    key          shape     formula (δ2 = yhat - y, δ1 = dJ/dz1 = dJ/db1|t)
    ===========  ========  ==================================================
    ``U``        (Dh,V)    h(t)ᵀ δ2
    ``h``        (Dh,)     δ2 Uᵀ
    ``b2``       (V,)      δ2
    ``b1``       (Dh,)     δ1 = (δ2 Uᵀ) ⊙ h(t) ⊙ (1 - h(t))
    ``L_x``      (d,)      δ1 Iᵀ          (= dJ/de(t), the row of L for x)
    ``I``        (d,Dh)    e(t)ᵀ δ1       at (t)
    ``H``        (Dh,Dh)   h(t-1)ᵀ δ1     at (t)
    ``h_prev``   (Dh,)     δ1 Hᵀ
    ===========  ========  ==================================================

    Where the seed differs: it writes (y - yhat) for δ2, which is the
    gradient of log yhat[y], i.e. -dJ/dz2, so its U, h, b2, b1, L_x, I, H
    and h(t-1) are all the negatives of these; and it writes
    dJ/dh(t-1) = Hᵀ δ1, which does not conform for a row vector δ1 (1×Dh);
    the right order is δ1 Hᵀ. "at (t)" means the contribution of this step
    only: the full gradient of a sequence's loss sums such terms over t
    (see ``bptt``).
    """
    x_ids = np.array([x])
    e, e_cache = embedding_forward(x_ids, p.L)
    h, h_cache = rnn_step_forward(np.asarray(h_prev, dtype=p.dtype)[None, :],
                                  rnn_input_forward(e, p.I, p.b1), p.H)
    _, out_cache = output_forward(h, p.U, p.b2, np.array([y]))
    dh, dU, db2 = output_backward(1.0, out_cache)
    dz, dh_prev = rnn_step_backward(dh, h_cache)
    dH, dI, db1, de = rnn_params_backward(dz, h_cache[0], e, p.H, p.I)
    return {"U": dU, "h": dh[0], "b2": db2, "b1": db1, "L_x": de[0],
            "I": dI, "H": dH, "h_prev": dh_prev[0]}


# ---------------------------------------------------------- truncated BPTT


def _forward_hidden(p: Params, inputs, h0):
    """Run the recurrence over (B,T) inputs. Returns (x, e, hs) with positions
    in time-major order (row t*B + b), hs (T+1,B,Dh) and hs[0] = h0."""
    B, T = inputs.shape
    x = np.ascontiguousarray(inputs.T).reshape(-1)
    e, _ = embedding_forward(x, p.L)
    a = rnn_input_forward(e, p.I, p.b1).reshape(T, B, -1)
    hs = np.empty((T + 1, B, p.Dh), dtype=p.dtype)
    hs[0] = h0
    for t in range(T):
        hs[t + 1], _ = rnn_step_forward(hs[t], a[t], p.H)
    return x, e, hs


def bptt(p: Params, inputs, targets, h0):
    """Loss and exact gradients over B streams of T steps (truncated BPTT).

    inputs, targets: int arrays (B,T), targets[b,t] = inputs[b,t+1] in a
    stream; h0 (B,Dh), the state carried from the previous window (treated
    as a constant: truncation).  Returns ``(loss, grads, h_last)`` with
    loss = Σ over all B·T positions of -log yhat[target] (natural log),
    grads a dict of parameter-shaped arrays, h_last (B,Dh).

    Backward, in the seed's words: δ2 = yhat - y at every position (one
    product over all B·T rows gives dJ/dU and dJ/dh); then, from t = T down
    to 1, dJ/dh(t) = δ2(t) Uᵀ + δ1(t+1) Hᵀ and δ1(t) = dJ/dh(t) ⊙ h(1-h);
    finally dJ/dH = Σ_t h(t-1)ᵀ δ1(t), dJ/dI = Σ_t e(t)ᵀ δ1(t), dJ/db1 =
    Σ_t δ1(t), each one product over all positions, and dJ/dL adds each
    δ1(t) Iᵀ into the row of the word x(t).
    """
    inputs = np.asarray(inputs)
    B, T = inputs.shape
    x, e, hs = _forward_hidden(p, inputs, h0)
    y = np.ascontiguousarray(np.asarray(targets).T).reshape(-1)
    h_all = hs[1:].reshape(B * T, -1)

    loss, out_cache = output_forward(h_all, p.U, p.b2, y)
    dh_out, dU, db2 = output_backward(1.0, out_cache)
    dh_out = dh_out.reshape(T, B, -1)

    dz = np.empty_like(dh_out)
    dh_next = np.zeros((B, p.Dh), dtype=p.dtype)
    for t in range(T - 1, -1, -1):
        dz[t], dh_next = rnn_step_backward(dh_out[t] + dh_next, (hs[t], hs[t + 1], p.H))

    dz = dz.reshape(B * T, -1)
    dH, dI, db1, de = rnn_params_backward(dz, hs[:-1].reshape(B * T, -1), e, p.H, p.I)
    dL = embedding_backward(de, (x, p.L.shape))
    grads = {"L": dL, "I": dI, "H": dH, "U": dU, "b1": db1, "b2": db2}
    return loss, grads, hs[T].copy()


# ----------------------------------------------------- no-gradient helpers


def forward_losses(p: Params, inputs, targets, h0):
    """Per-position losses -ln yhat[target], shape (B,T), and h_last; the
    forward pass only (evaluation and scoring)."""
    inputs = np.asarray(inputs)
    B, T = inputs.shape
    _, _, hs = _forward_hidden(p, inputs, h0)
    y = np.asarray(targets).T.reshape(-1)
    logp = log_softmax_rows(logits_forward(hs[1:].reshape(B * T, -1), p.U, p.b2))
    losses = -logp[np.arange(B * T), y]
    return losses.reshape(T, B).T, hs[T].copy()


def rnn_step(p: Params, x_ids, h_prev):
    """h(t) for word ids x (B,) and h(t-1) (B,Dh)."""
    e, _ = embedding_forward(np.asarray(x_ids), p.L)
    h, _ = rnn_step_forward(np.asarray(h_prev, dtype=p.dtype), rnn_input_forward(e, p.I, p.b1), p.H)
    return h


def output_probs(p: Params, h):
    """yhat = softmax(h U + b2), (B,V)."""
    return np.exp(log_softmax_rows(logits_forward(np.atleast_2d(h), p.U, p.b2)))


__all__ = ["Params", "PARAM_NAMES", "step_gradients", "bptt", "forward_losses",
           "rnn_step", "output_probs", "sigmoid"]
