"""The Elman RNN language model: parameters, one time step, and truncated BPTT.

Everything here is composed of the forward/backward pairs of ``layers``
(the output layer and the position-parallel products in their fast form
from ``elman.fast``, which the tests check against ``layers``):
``step_gradients`` runs them on one position, ``bptt`` on B streams of T
steps, so each formula has exactly one implementation.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from elman.core.classes import (
    class_bounds, class_log_probs, class_output_backward, class_output_forward, class_output_losses,
)
from elman.core.layers import (
    dropout_backward, dropout_forward, dropout_mask, embedding_backward, embedding_forward,
    embedding_row_sums, log_softmax_rows, logits_forward, rnn_step_backward, rnn_step_forward, sigmoid,
)
from elman.fast.output import output_backward, output_forward, output_losses, stacked_bias
from elman.fast.recurrence import rnn_input_forward, rnn_params_backward
from elman.fast.sampled import sampled_backward, sampled_losses
from elman.fast.threads import one_blas_thread
from elman.core.sparse import SparseGrad, densify

PARAM_NAMES = ("L", "I", "H", "U", "b1", "b2")
CLASS_NAMES = ("Uc", "bc", "class_bounds")


@dataclass
class Params:
    """The model's parameters, named and shaped as in the seed.

    L (V,d) embeddings, I (d,Dh) input weights, H (Dh,Dh) recurrent weights,
    U (Dh,V) output weights, b1 (Dh,) hidden bias, b2 (V,) output bias.

    Optional, for the class-factorised softmax (``elman.core.classes``; all
    three or none): Uc (Dh,K) class weights, bc (K,) class biases,
    class_bounds (K+1,) int64, class c = ids [bounds[c], bounds[c+1]).
    None fields are left out of ``as_dict``.

    U and b2 are views of one array, [U; b2] (Dh+1,V), b2 its last row (the
    bias trick, ``fast.output.stacked_bias``), held in memory word by word:
    the array is W = [U; b2]ᵀ (V,Dh+1) and U = W[:, :Dh]ᵀ, a (Dh,V) view
    whose column for word w is one contiguous row of W. What reads a few
    words' columns (sampled softmax's ids, a class's words, their updates)
    then reads contiguous memory: at V = 800k, gathering 1,640 columns of a
    row-major (Dh,V) U takes 30 ms (201 cache lines 3.2 MB apart for each),
    of this layout 0.06 ms. Products take either layout alike (BLAS
    transposes for free); the model file keeps the seed's U (Dh,V).
    The constructor copies U and b2 there unless they already are, so a
    Params does not share U or b2 with the arrays it was made from;
    ``as_dict`` returns the views themselves.
    """
    L: np.ndarray
    I: np.ndarray
    H: np.ndarray
    U: np.ndarray
    b1: np.ndarray
    b2: np.ndarray
    Uc: np.ndarray | None = None
    bc: np.ndarray | None = None
    class_bounds: np.ndarray | None = None

    def __post_init__(self):
        # b2 is kept in memory as one more row of U, so that the logits
        # h U + b2 are one product [h, 1]·[U; b2] (``fast.output.stacked_bias``).
        # Updates in place keep it so; a new U or b2 is copied in here.
        U, b2 = np.asarray(self.U), np.asarray(self.b2)
        if U.ndim == 2 and b2.shape == U.shape[1:] and b2.dtype == U.dtype and stacked_bias(U, b2) is None:
            self.U, self.b2 = word_major(U.shape[0], U.shape[1], U.dtype)
            self.U[...], self.b2[...] = U, b2

    @classmethod
    def init(cls, V: int, d: int, Dh: int, seed: int = 0, dtype="float32",
             classes: int = 0, counts=None) -> "Params":
        """A small random start.

        I, H, U: Glorot-uniform, bound sqrt(6/(fan_in+fan_out)), so the
        pre-activations start with unit-order variance whatever the sizes
        and the sigmoid is neither saturated (no gradient) nor linear.
        L: uniform in ±0.1, as in Mikolov's RNNLM: small inputs that do not
        dominate h(t-1) H at the start. b1, b2: zero; every unit and word
        starts alike and the data sets them.
        Drawn in float64 from ``numpy.random.default_rng(seed)``, then cast,
        so float32 and float64 models of one seed start from the same values;
        drawn in blocks of rows (``_uniform``), so at V = 800k no float64
        copy of L or U is ever whole in memory, with the very same values.

        ``classes`` K > 0: a class-factorised softmax over K frequency-binned
        classes of the word ``counts`` (V,) (ids in descending count order;
        ``elman.core.classes.class_bounds``); Uc Glorot-uniform, bc zero, drawn
        after the rest, so the shared tensors equal the full model's.
        """
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, not {dtype}")
        rng = np.random.default_rng(seed)

        def glorot(n_in, n_out, out=None):
            bound = np.sqrt(6.0 / (n_in + n_out))
            return _uniform(rng, -bound, bound, (n_in, n_out), dtype, out)

        L = _uniform(rng, -0.1, 0.1, (V, d), dtype)
        I, H = glorot(d, Dh), glorot(Dh, Dh)
        U, b2 = word_major(Dh, V, dtype)           # the layout Params keeps (no copy after)
        glorot(Dh, V, out=U)
        b2[...] = 0
        arrays = dict(L=L, I=I, H=H, U=U, b1=np.zeros(Dh, dtype), b2=b2)
        if classes:
            if counts is None or len(counts) != V:
                raise ValueError(f"a {classes}-class softmax needs the {V} word counts")
            arrays.update(Uc=glorot(Dh, classes), bc=np.zeros(classes, dtype),
                          class_bounds=class_bounds(counts, classes))
        return cls(**arrays)

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

    @property
    def classes(self) -> int:
        """K for a class-factorised softmax, 0 for the full one."""
        return 0 if self.Uc is None else self.Uc.shape[1]

    def as_dict(self) -> dict:
        """name -> array for every tensor (the arrays themselves, not copies)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, arrays: dict) -> "Params":
        missing = [n for n in PARAM_NAMES if n not in arrays]
        if missing:
            raise ValueError(f"missing tensors: {', '.join(missing)}")
        have = [n for n in CLASS_NAMES if n in arrays]
        if have and len(have) < len(CLASS_NAMES):
            raise ValueError(f"class softmax tensors {', '.join(have)} without "
                             f"{', '.join(n for n in CLASS_NAMES if n not in have)}")
        p = cls(**{n: np.asarray(arrays[n]) for n in PARAM_NAMES + tuple(have)})
        p.check_shapes()
        return p

    @staticmethod
    def shapes(V: int, d: int, Dh: int) -> dict:
        """The seed's shape of each tensor, by name (in PARAM_NAMES order)."""
        return dict(L=(V, d), I=(d, Dh), H=(Dh, Dh), U=(Dh, V), b1=(Dh,), b2=(V,))

    def check_shapes(self) -> None:
        V, d, Dh = self.V, self.d, self.Dh
        for name, shape in self.shapes(V, d, Dh).items():
            got = getattr(self, name).shape
            if got != shape:
                raise ValueError(f"tensor {name} has shape {got}, expected {shape} "
                                 f"(V={V}, d={d}, Dh={Dh})")
        if self.classes:
            cb = self.class_bounds
            K = cb.size - 1                     # the bounds define K; Uc and bc must agree
            for name, shape in dict(Uc=(Dh, K), bc=(K,), class_bounds=(K + 1,)).items():
                if getattr(self, name).shape != shape:
                    raise ValueError(f"tensor {name} has shape {getattr(self, name).shape}, "
                                     f"expected {shape} (Dh={Dh}, K={K} classes)")
            if cb.dtype.kind not in "iu" or cb[0] != 0 or cb[-1] != V or (np.diff(cb) <= 0).any():
                raise ValueError(f"class_bounds must be increasing integers from 0 to V={V}")

    def copy(self) -> "Params":
        return type(self)(**{k: v.copy() for k, v in self.as_dict().items()})

    def astype(self, dtype) -> "Params":
        """The float tensors cast to ``dtype`` (class_bounds stay integers)."""
        return type(self)(**{k: v.astype(dtype) if v.dtype.kind == "f" else v.copy()
                             for k, v in self.as_dict().items()})


def word_major(Dh: int, V: int, dtype):
    """U (Dh,V) and b2 (V,), uninitialised, as the views of W (V,Dh+1) that
    ``Params`` keeps: U = W[:, :Dh]ᵀ, b2 = W[:, Dh]."""
    W = np.empty((V, Dh + 1), dtype)
    return W[:, :Dh].T, W[:, Dh]


# float64 draws held at once by ``_uniform``: 64 MB, whatever V is. Blocks of
# several rows, because U's rows lie across W's: one row a pass would sweep
# all of W (643 MB at V = 800k) for each of U's 200 rows.
DRAW_BLOCK = 1 << 23


def _uniform(rng, low, high, shape, dtype, out=None):
    """``rng.uniform(low, high, shape).astype(dtype)`` with the same values,
    drawn a block of rows at a time into ``out`` (or a new array): a
    Generator's uniforms are one stream, low + (high - low)·u for each u in
    order, so consecutive blocks continue it exactly (a test holds the two
    equal), and only a block is ever float64."""
    out = np.empty(shape, dtype) if out is None else out
    rows = max(1, DRAW_BLOCK // max(1, shape[1]))
    for i in range(0, shape[0], rows):
        block = out[i:i + rows]
        block[...] = rng.uniform(low, high, block.shape)
    return out


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
    if p.classes:
        raise ValueError("step_gradients is the seed's full-softmax model; use bptt for a class softmax")
    x_ids = np.array([x])
    e, e_cache = embedding_forward(x_ids, p.L)
    h, h_cache = rnn_step_forward(np.asarray(h_prev, dtype=p.dtype)[None, :],
                                  rnn_input_forward(e, p.I, p.b1), p.H)
    _, out_cache = output_forward(h, p.U, p.b2, np.array([y]))
    dh, dU, db2, _ = output_backward(1.0, out_cache)
    dz, dh_prev = rnn_step_backward(dh, h_cache)
    dH, dI, db1, de = rnn_params_backward(dz, h_cache[0], e, p.H, p.I)
    return {"U": dU, "h": dh[0], "b2": db2, "b1": db1, "L_x": de[0],
            "I": dI, "H": dH, "h_prev": dh_prev[0]}


# ---------------------------------------------------------- truncated BPTT


def _forward_hidden(p: Params, inputs, h0, e_mask=None):
    """Run the recurrence over (B,T) inputs. Returns (x, e, hs, caches) with
    positions in time-major order (row t*B + b), hs (T+1,B,Dh), hs[0] = h0,
    and each step's ``rnn_step_forward`` cache; with ``e_mask`` (B*T,d), e
    is the embedding after dropout."""
    B, T = inputs.shape
    x = np.ascontiguousarray(inputs.T).reshape(-1)
    e, _ = embedding_forward(x, p.L)
    if e_mask is not None:
        e, _ = dropout_forward(e, e_mask)
    hs = np.empty((T + 1, B, p.Dh), dtype=p.dtype)
    hs[0] = h0
    caches = []
    with one_blas_thread():
        a = rnn_input_forward(e, p.I, p.b1).reshape(T, B, -1)
        for t in range(T):
            caches.append(rnn_step_forward(hs[t], a[t], p.H, out=hs[t + 1])[1])
    return x, e, hs, caches


def _forward_positions(p: Params, inputs, targets, h0, e_mask=None):
    """The forward recurrence plus the time-major targets and the stacked h(t):
    (x, e, hs, caches, y (B*T,), h_all (B*T,Dh)), row t*B + b for stream b at step t."""
    x, e, hs, caches = _forward_hidden(p, np.asarray(inputs), h0, e_mask)
    y = np.ascontiguousarray(np.asarray(targets).T).reshape(-1)
    return x, e, hs, caches, y, hs[1:].reshape(len(y), -1)


def dropout_masks(p: Params, B: int, T: int, rate: float, seed):
    """The masks ``bptt`` applies for ``dropout=(rate, seed)``: for e(t)
    (B*T,d) and for h(t) as the output layer sees it (B*T,Dh), rows
    time-major (t*B + b), drawn from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    return (dropout_mask(rng, (B * T, p.d), rate, p.dtype), dropout_mask(rng, (B * T, p.Dh), rate, p.dtype))


def bptt(p: Params, inputs, targets, h0, sampled=None, sparse: bool = False, dropout=None,
         scale: float = 1.0):
    """Loss and exact gradients over B streams of T steps (truncated BPTT).

    inputs, targets: int arrays (B,T), targets[b,t] = inputs[b,t+1] in a
    stream; h0 (B,Dh), the state carried from the previous window (treated
    as a constant: truncation).  Returns ``(loss, grads, h_last)`` with
    loss = Σ over all B·T positions of -log yhat[target] (natural log),
    grads a dict of parameter-shaped arrays, h_last (B,Dh).

    ``sampled`` = (samples (S,), log_q (V,)): train the full-softmax model
    with the sampled-softmax loss of ``elman.core.sampled`` instead (the loss
    and gradients are then that loss's, exactly). ``sparse``: dJ/dL, and
    under ``sampled`` dJ/dU and dJ/db2, as ``SparseGrad`` (only the rows or
    columns the window touched; what the trainer's optimizers take), and
    under a class softmax dJ/dU and dJ/db2 as the columns of the classes
    present.
    ``dropout`` = (rate, seed): inverted dropout (Zaremba et al. 2014) on
    the connections that are not recurrent, e(t) into the recurrence and
    h(t) into the output layer, with the masks of ``dropout_masks``; the
    same seed, the same masks (and a deterministic loss to check).
    ``scale``: the gradients are those of scale·loss (the trainer's mean
    over positions, 1/(B·T)); the factor enters where dJ/dz2 is formed, on
    the (N,·) side of the output layer's products, not as one more pass over
    every gradient. The returned loss is the sum all the same.

    Backward, in the seed's words: δ2 = yhat - y at every position (one
    product over all B·T rows gives dJ/dU and dJ/dh); then, from t = T down
    to 1, dJ/dh(t) = δ2(t) Uᵀ + δ1(t+1) Hᵀ and δ1(t) = dJ/dh(t) ⊙ h(1-h);
    finally dJ/dH = Σ_t h(t-1)ᵀ δ1(t), dJ/dI = Σ_t e(t)ᵀ δ1(t), dJ/db1 =
    Σ_t δ1(t), each one product over all positions, and dJ/dL adds each
    δ1(t) Iᵀ into the row of the word x(t).
    """
    if sampled is not None and p.classes:
        raise ValueError("sampled softmax trains the full-softmax model, not a class softmax")
    B, T = np.shape(inputs)
    e_mask, h_mask = dropout_masks(p, B, T, *dropout) if dropout else (None, None)
    x, e, hs, caches, y, h_all = _forward_positions(p, inputs, targets, h0, e_mask)
    if dropout:
        h_all, _ = dropout_forward(h_all, h_mask)

    def recurrence_backward(dh_out):
        """dJ/dh of every position -> the gradients of L, I, H, b1."""
        if dropout:
            dh_out = dropout_backward(dh_out, h_mask)
        dh_out = dh_out.reshape(T, B, -1)
        dz = np.empty_like(dh_out)
        dh_next = np.zeros((B, p.Dh), dtype=p.dtype)
        with one_blas_thread():
            for t in range(T - 1, -1, -1):
                dh_next += dh_out[t]
                dz[t], dh_next = rnn_step_backward(dh_next, caches[t])
            dz = dz.reshape(B * T, -1)
            dH, dI, db1, de = rnn_params_backward(dz, hs[:-1].reshape(B * T, -1), e, p.H, p.I)
        if dropout:
            de = dropout_backward(de, e_mask)
        dL = SparseGrad(*embedding_row_sums(de, x), p.L.shape, 0) if sparse else \
            embedding_backward(de, (x, p.L.shape))
        return {"L": dL, "I": dI, "H": dH, "b1": db1}

    if sampled is not None:
        losses, out_cache = sampled_losses(h_all, p.U, p.b2, y, *sampled)
        loss = float(losses.sum(dtype=np.float64))
        _, rows, ids, grads = sampled_backward(scale, out_cache, overlap=recurrence_backward)
        cols, sums = embedding_row_sums(rows, ids)
        grads.update(U=SparseGrad(cols, sums[:, :-1].T, p.U.shape, -1),
                     b2=SparseGrad(cols, sums[:, -1], p.b2.shape, -1))
        if not sparse:
            grads = densify(grads)
    elif p.classes:
        loss, out_cache = class_output_forward(h_all, p.U, p.b2, p.Uc, p.bc, p.class_bounds, y)
        # The recurrence's backward pass on one core, U's columns on the others.
        _, cols, dU, db2, dUc, dbc, grads = class_output_backward(scale, out_cache, overlap=recurrence_backward)
        grads.update(U=SparseGrad(cols, dU, p.U.shape, -1), b2=SparseGrad(cols, db2, p.b2.shape, -1),
                     Uc=dUc, bc=dbc)
        if not sparse:
            grads = densify(grads)
    else:
        loss, out_cache = output_forward(h_all, p.U, p.b2, y)
        # The recurrence's backward pass runs on one core while the others
        # compute dJ/dU, which it does not need.
        _, dU, db2, grads = output_backward(scale, out_cache, overlap=recurrence_backward)
        grads.update(U=dU, b2=db2)
    grads = {k: grads[k] for k in p.as_dict() if k in grads}     # the order of the parameters
    return loss, grads, hs[T].copy()


# ----------------------------------------------------- no-gradient helpers


def forward_losses(p: Params, inputs, targets, h0):
    """Per-position losses -ln yhat[target], shape (B,T), and h_last; the
    forward pass only (evaluation and scoring)."""
    return next(window_losses(p, [(inputs, targets)], h0))


def window_losses(p: Params, windows, h0):
    """``forward_losses`` of consecutive windows, the state carried from one
    to the next: yields (losses (B,T), h_last) for each (inputs, targets)
    of the iterable ``windows``.

    Pipelined: the next window's recurrence, which is sequential and needs
    one core, runs while the other cores compute this window's output
    layer; the numbers are those of ``forward_losses`` window by window.
    """
    windows = iter(windows)
    window = next(windows, None)
    ready = None if window is None else _forward_positions(p, *window, h0)
    while ready is not None:
        _, _, hs, _, y, h_all = ready
        window = next(windows, None)

        def ahead(hs=hs, window=window):
            return None if window is None else _forward_positions(p, *window, hs[-1])

        losses, ready = _bounded_losses(p, h_all, y, ahead)
        T, B = hs.shape[0] - 1, hs.shape[1]
        yield losses.reshape(T, B).T, hs[-1].copy()


# Output units times rows that evaluation computes at once: 2^26 logits, 256 MB
# in float32. At V = 800k a window of 256 positions would be 820 MB of logits,
# and ``elman score``'s batches of lines more; in blocks of rows the memory is
# this bound whatever the window, the lines or V (above 2^26 words, one row).
EVAL_LOGITS = 1 << 26


def _bounded_losses(p: Params, h_all, y, ahead):
    """The output layer's losses of every row, in blocks of rows of at most
    EVAL_LOGITS logits (a class softmax's rows count K plus its widest class);
    ``ahead()`` runs beside the first block. Returns (losses, ahead())."""
    width = p.classes + int(np.diff(p.class_bounds).max()) if p.classes else p.V
    step = max(1, EVAL_LOGITS // width)
    losses, ready = np.empty(len(y), p.dtype), None
    for i in range(0, max(len(y), 1), step):
        rows = slice(i, i + step)
        if p.classes:
            losses[rows], _ = class_output_losses(h_all[rows], p.U, p.b2, p.Uc, p.bc, p.class_bounds, y[rows])
            ready = ahead() if i == 0 else ready
        else:
            losses[rows], _, got = output_losses(h_all[rows], p.U, p.b2, y[rows], overlap=ahead if i == 0 else None)
            ready = got if i == 0 else ready
    return losses, ready


def rnn_step(p: Params, x_ids, h_prev):
    """h(t) for word ids x (B,) and h(t-1) (B,Dh)."""
    e, _ = embedding_forward(np.asarray(x_ids), p.L)
    h, _ = rnn_step_forward(np.asarray(h_prev, dtype=p.dtype), rnn_input_forward(e, p.I, p.b1), p.H)
    return h


def output_probs(p: Params, h):
    """yhat = softmax(h U + b2), (B,V); with classes, P(c(w)|h) P(w|c(w),h)."""
    if p.classes:
        return np.exp(class_log_probs(h, p.U, p.b2, p.Uc, p.bc, p.class_bounds))
    return np.exp(log_softmax_rows(logits_forward(np.atleast_2d(h), p.U, p.b2)))


__all__ = ["Params", "PARAM_NAMES", "CLASS_NAMES", "step_gradients", "bptt", "forward_losses",
           "window_losses", "dropout_masks", "rnn_step", "output_probs", "sigmoid"]
