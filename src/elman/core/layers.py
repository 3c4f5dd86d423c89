"""The seed's three equations, each as a forward/backward pair.

    e(t)    = x(t) L                                  embedding
    h(t)    = sigmoid(h(t-1) H + e(t) I + b1)         recurrence step
    yhat(t) = softmax(h(t) U + b2),  J = -log yhat[y] output + cross-entropy

This module is the reference: NumPy only, each function a few lines. The
speed machinery in ``elman.fast`` computes the same functions (the output
layer by column chunks on all cores, the position-parallel products
threaded); the model uses those, and the tests check them against these.

Row-vector convention as in the seed: a batch of N positions is a stack of
N rows, so e is (N,d), h is (N,Dh), yhat is (N,V). Every ``*_forward``
returns ``(out, cache)`` and every ``*_backward(dout, cache)`` returns the
gradients of the loss with respect to its inputs, in the same shapes.

The recurrence is split in two so that one formula serves a single step and
a whole sequence: ``rnn_step_backward`` is the sequential part (it needs
dJ/dh(t) before it can hand dJ/dh(t-1) back), and ``rnn_params_backward``
turns the stacked dJ/dz of any number of positions into dJ/dH, dJ/dI,
dJ/db1 and dJ/de with one matrix product each.
"""
from __future__ import annotations

import sys

import numpy as np

# ----------------------------------------------------------------- embedding


def embedding_forward(x, L):
    """e = x L, with x given as word ids (N,) rather than one-hot rows (N,V).

    A one-hot row times L selects one row of L, so ``L[x]`` is the product
    without the V-wide multiplication.  Returns e (N,d).
    """
    return L[x], (x, L.shape)


def embedding_backward(de, cache):
    """dJ/dL = xᵀ · dJ/de        (V,N)(N,d) = (V,d)

    Row v of dJ/dL is the sum of the rows of dJ/de at positions whose word
    is v; every other row is zero.  Summing rows that share a word is done by
    sorting the ids and one ``np.add.reduceat`` (a segmented sum), which is
    vectorised, where ``np.add.at`` loops element by element.
    """
    x, shape = cache
    dL = np.zeros(shape, dtype=de.dtype)
    words, rows = embedding_row_sums(de, x)
    dL[words] = rows
    return dL


def embedding_row_sums(de, x):
    """(unique word ids, summed rows of de for each): the non-zero rows of dJ/dL."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    return xs[starts], np.add.reduceat(de[order], starts, axis=0)

# ---------------------------------------------------------------- recurrence


def sigmoid(z, out=None):
    """1 / (1 + exp(-z)) written as (1 + tanh(z/2)) / 2: same value, but no
    exp(-z) to overflow for large negative z, so no warning at |z| = 1e4."""
    out = np.multiply(z, 0.5, out=out)
    np.tanh(out, out=out)
    out += 1.0
    out *= 0.5
    return out


def rnn_input_forward(e, I, b1):
    """a = e I + b1 for every position at once: (N,d)(d,Dh) + (Dh,) = (N,Dh).

    The part of the pre-activation that does not depend on h(t-1), so a
    whole sequence's worth is one matrix product.
    """
    return e @ I + b1


def rnn_step_forward(h_prev, a, H, out=None):
    """h = sigmoid(h_prev H + a), a = e I + b1.   (B,Dh)(Dh,Dh) + (B,Dh) = (B,Dh)

    ``out``: where to write h (B,Dh), e.g. a row of the caller's (T+1,B,Dh)."""
    z = np.matmul(h_prev, H, out=out)
    z += a
    h = sigmoid(z, out=z)
    return h, (h_prev, h, H)


def rnn_step_backward(dh, cache, out=None):
    """The sequential half of the recurrence's backward pass.

        dJ/dz      = dJ/dh ⊙ h ⊙ (1 - h)     (B,Dh)  sigmoid'(z) = h(1-h)
        dJ/dh(t-1) = dJ/dz · Hᵀ              (B,Dh)(Dh,Dh) = (B,Dh)

    dJ/dz is the seed's "dJ/db1 at (t)" (b1 enters z with coefficient 1).
    The seed writes dJ/dh(t-1) = Hᵀ · dJ/db1, which does not conform for
    row vectors ((Dh,Dh) times (1,Dh)); the product is dJ/dz · Hᵀ.
    Returns (dz, dh_prev); ``out``: where to write dJ/dz (B,Dh), e.g. a row
    of the caller's (T,B,Dh).
    """
    h_prev, h, H = cache
    dz = np.subtract(1.0, h, out=out)
    dz *= h
    dz *= dh
    return dz, dz @ H.T


def rnn_params_backward(dz, h_prev, e, H, I):
    """From dJ/dz of N stacked positions (one step, or all B·T) to the rest:

        dJ/dH  = h_prevᵀ · dJ/dz    (Dh,N)(N,Dh) = (Dh,Dh)
        dJ/dI  = eᵀ · dJ/dz         (d,N)(N,Dh)  = (d,Dh)
        dJ/db1 = Σ_rows dJ/dz       (Dh,)
        dJ/de  = dJ/dz · Iᵀ         (N,Dh)(Dh,d) = (N,d)

    Each weight gradient is a sum over positions of outer products (a column
    of the input times a row of dJ/dz), which a single matrix product does.
    """
    return h_prev.T @ dz, e.T @ dz, dz.sum(axis=0), dz @ I.T


# ------------------------------------------------------------------ dropout


def dropout_mask(rng, shape, rate, dtype):
    """Inverted dropout's mask: 0 with probability ``rate``, else 1/(1 - rate),
    so that E[x ⊙ mask] = x and evaluation uses x as it is.

    Each entry is kept when a uniform 16-bit integer is below keep·2^16
    (the rate rounded to 1/65536): the generator's raw 32-bit draws cut in
    halves (the bits of ``rng.bytes``), half the bits of float32 uniforms
    (a training window draws 256k)."""
    keep = 1.0 - rate
    u = _uint16(rng, int(np.prod(shape))).reshape(shape)
    return np.multiply(u < round(keep * 65536), np.dtype(dtype).type(1.0 / keep), dtype=dtype)


def _uint16(rng, n):
    """n uniform 16-bit integers: ``rng.bytes(2n)`` read as uint16. PCG64's
    32-bit draws are the halves of its 64-bit ones, low half first, so on a
    little-endian machine whole 64-bit draws viewed as uint16 are those
    bits at half the cost of ``integers`` (and the generator ends where
    ``bytes`` leaves it: no half draw is held back)."""
    bits = rng.bit_generator
    if n % 4 == 0 and type(bits) is np.random.PCG64 and sys.byteorder == "little" \
            and not bits.state["has_uint32"]:
        return bits.random_raw(n // 4).view(np.uint16)
    return rng.integers(0, 1 << 16, size=n, dtype=np.uint16)


def dropout_forward(x, mask):
    """x̃ = x ⊙ mask, mask from ``dropout_mask``. Returns (x̃, mask)."""
    return x * mask, mask


def dropout_backward(dout, mask):
    """dJ/dx = dJ/dx̃ ⊙ mask       (shape of x)"""
    return dout * mask


# ------------------------------------------------- output + softmax + loss


def logits_forward(h, U, b2):
    """z2 = h U + b2     (N,Dh)(Dh,V) + (V,) = (N,V)"""
    z = h @ U
    z += b2
    return z


def log_softmax_rows(z):
    """log softmax of each row, shifted by the row max so exp never overflows."""
    z = z - z.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


def softmax_loss_forward(h, U, b2, y):
    """J_n = -log yhat[n, y_n],  yhat = softmax(h U + b2)    (N,) natural log

    h (N,Dh), U (Dh,V), b2 (V,), y (N,) target ids. Returns (J, cache).
    """
    logp = log_softmax_rows(logits_forward(h, U, b2))
    return -logp[np.arange(len(y)), y], (h, U, np.exp(logp), y)


def softmax_loss_backward(dJ, cache):
    """Gradients of Σ_n dJ_n · J_n (dJ: a scalar or one weight per row):

        dJ/dz2 = yhat - y                 (N,V)   y one-hot rows
        dJ/dU  = hᵀ · dJ/dz2              (Dh,N)(N,V) = (Dh,V)
        dJ/db2 = Σ_rows dJ/dz2            (V,)
        dJ/dh  = dJ/dz2 · Uᵀ              (N,V)(V,Dh) = (N,Dh)

    The seed writes (y - yhat): that is the gradient of log yhat[y], i.e.
    -dJ/dz2, so every formula built from it has the opposite sign.
    Returns (dh, dU, db2).
    """
    h, U, yhat, y = cache
    dz = yhat.copy()
    dz[np.arange(len(y)), y] -= 1.0
    dz *= np.reshape(dJ, (-1, 1))
    return dz @ U.T, h.T @ dz, dz.sum(axis=0)
