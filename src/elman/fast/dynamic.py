"""Dynamic evaluation of a class-softmax model, compiled: a whole run of
segments in one call, with no Python between them (``inference.dynamic``
defines the rule; the tests hold this to it and to its reference loop).

For each segment of n tokens, from the state h carried in:

1. the lazy decay: the rows of L it reads and the words of its targets'
   classes (rows of W = [U; b2]ᵀ) brought to θ0 + (θ - θ0)(1 - decay)^behind;
2. forward, t = 1..n: a = L[x] I + b1, h(t) = sigmoid(h(t-1) H + a),
   class logits zc = h Uc + bc + Σ_f D[Oc_f + k] (K,), word logits of the
   target's class z[w] = [h, 1]·W[w] + Σ_f D[O_f + w]; the loss
   J(t) = lse(zc) - zc[c] + lse(z) - z[y] (log-sum-exps in float64) and
   δc = softmax(zc) - onehot(c) (K,), δw = softmax(z) - onehot(y) (|c|,);
3. backward: dJ/dh(t) = δc Ucᵀ + δw W[a:b, :Dh] (Dh,), then from t = n
   down, dz(t) = (dJ/dh(t) + dz(t+1) Hᵀ) ⊙ h(t)(1 - h(t));
4. the step θ <- θ - lr·g/s on every weight (g from the old weights: all
   gradients are formed before any weight moves), D at its own rate
   without s; then I, b1, H, Uc, bc decay: θ += decay·(θ0 - θ).

The sums of the gradients (over a segment's positions) are taken as the
positions come, where NumPy forms each as one product: equal to rounding.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from elman.fast.classscore import word_logit


@njit(cache=True, nogil=True, fastmath=True)
def _catch_up(P, P0, x, cls, bounds, stampL, stampC, k, decay, a, b):
    """Step 1 for the segment [a, b): rows of L and class rows of W behind k."""
    L, W, L0, W0 = P[0], P[4], P0[0], P0[4]
    one = 1.0 - decay
    for t in range(a, b):
        r = x[t]
        if stampL[r] < k:
            f = L.dtype.type(one ** (k - stampL[r]))
            for m in range(L.shape[1]):
                L[r, m] = L0[r, m] + (L[r, m] - L0[r, m]) * f
            stampL[r] = k
        c = cls[t]
        if stampC[c] < k:
            f = W.dtype.type(one ** (k - stampC[c]))
            for w in range(bounds[c], bounds[c + 1]):
                for i in range(W.shape[1]):
                    W[w, i] = W0[w, i] + (W[w, i] - W0[w, i]) * f
            stampC[c] = k


@njit(cache=True, nogil=True, fastmath=True)
def _softmax_delta(z, n, target, delta):
    """delta[:n] = softmax(z[:n]) - onehot(target); returns lse(z[:n]) - z[target]."""
    m, zt = z[0], z[target]
    for k in range(1, n):
        m = max(m, z[k])
    s = 0.0
    for k in range(n):
        z[k] = np.exp(z[k] - m)
        s += z[k]
    inv = 1.0 / s
    for k in range(n):
        delta[k] = z[k] * inv
    delta[target] -= 1.0
    return m + np.log(s) - zt


@njit(cache=True, nogil=True, fastmath=True)
def _output(P, D, h, Ot, Oct, c, yw, bounds, dc, dw, z):
    """Step 2's output layer at one position: fills dc (K,), dw[:|c|]; returns J."""
    W, Uc, bc = P[4], P[5], P[6]
    Dh, K = Uc.shape
    zc = bc.copy()
    for i in range(Dh):
        hi = h[i]
        for k in range(K):
            zc[k] += hi * Uc[i, k]
    for k in range(K):
        z[k] = zc[k]
    for f in range(Oct.shape[0]):
        base = Oct[f]
        for k in range(K):
            z[k] += D[base + k]
    loss = _softmax_delta(z, K, c, dc)
    a, b = bounds[c], bounds[c + 1]
    for w in range(a, b):
        z[w - a] = word_logit(W[w], h, Dh, D, Ot, w)
    return loss + _softmax_delta(z, b - a, yw - a, dw)


@njit(cache=True, nogil=True, fastmath=True)
def _forward(P, D, x, y, cls, O, Oc, bounds, a, n, hs, E, dC, dW, losses):
    """Step 2 for positions a..a+n-1; hs[0] the state before, hs[t+1] after."""
    L, I, b1, H = P[0], P[1], P[2], P[3]
    d, Dh = I.shape
    z = np.empty(max(dC.shape[1], dW.shape[1]), np.float64)
    for t in range(n):
        E[t] = L[x[a + t]]
        zt = b1.copy()
        for m in range(d):
            em = E[t, m]
            for j in range(Dh):
                zt[j] += em * I[m, j]
        prev = hs[t]
        for i in range(Dh):
            hi = prev[i]
            for j in range(Dh):
                zt[j] += hi * H[i, j]
        for j in range(Dh):
            hs[t + 1, j] = 1.0 / (1.0 + np.exp(-max(zt[j], -80.0)))
        losses[a + t] = _output(P, D, hs[t + 1], O[a + t], Oc[a + t], cls[a + t], y[a + t], bounds,
                                dC[t], dW[t], z)


@njit(cache=True, nogil=True, fastmath=True)
def _backward(P, cls, bounds, a, n, hs, dC, dW, dz):
    """Step 3: dz (n,Dh) of the segment's positions, from the weights as they are."""
    H, W, Uc = P[3], P[4], P[5]
    Dh, K = Uc.shape
    nxt = np.zeros(Dh, hs.dtype)
    for t in range(n - 1, -1, -1):
        g = nxt.copy()
        for i in range(Dh):
            v = g[i]
            for k in range(K):
                v += dC[t, k] * Uc[i, k]
            g[i] = v
        c = cls[a + t]
        for w in range(bounds[c], bounds[c + 1]):
            dw = dW[t, w - bounds[c]]
            for i in range(Dh):
                g[i] += dw * W[w, i]
        h = hs[t + 1]
        for j in range(Dh):
            dz[t, j] = g[j] * h[j] * (h.dtype.type(1) - h[j])
        for i in range(Dh):
            v = dz.dtype.type(0)
            for j in range(Dh):
                v += H[i, j] * dz[t, j]
            nxt[i] = v


@njit(cache=True, nogil=True, fastmath=True)
def _dense_step(p, p0, s, left, right, n, rate, decay):
    """p -= rate · (Σ_t left[t]ᵀ right[t]) / s, then p += decay·(p0 - p); p (r,q),
    left (n,r), right (n,q). A 1-D p (a bias): left is None-like (r = 1, ones)."""
    q = p.shape[1]
    g = np.empty(q, p.dtype)
    for i in range(p.shape[0]):
        g[:] = 0
        for t in range(n):
            li = left[t, i]
            for j in range(q):
                g[j] += li * right[t, j]
        for j in range(q):
            v = p[i, j] - rate * g[j] / s[i, j]
            if decay != 0.0:
                v += (p0[i, j] - v) * decay
            p[i, j] = v


@njit(cache=True, nogil=True, fastmath=True)
def _step(P, P0, S, D, x, cls, O, Oc, bounds, a, n, hs, E, dC, dW, dz, ones, lr, dlr, decay):
    """Step 4 for the segment's n positions."""
    L, I, b1, H, W, Uc, bc = P
    sL, sI, sb1, sH, sW, sUc, sbc = S
    rate, drate, dec = L.dtype.type(lr), D.dtype.type(dlr), L.dtype.type(decay)
    d, Dh = I.shape
    for t in range(n):                               # L's rows: dJ/dL[x] = dz Iᵀ, from the old I
        r = x[a + t]
        for m in range(d):
            v = dz.dtype.type(0)
            for j in range(Dh):
                v += I[m, j] * dz[t, j]
            L[r, m] -= rate * L.dtype.type(v) / sL[r, m]
        c = cls[a + t]
        h = hs[t + 1]
        for w in range(bounds[c], bounds[c + 1]):    # the words of the class: [h, 1]ᵀ δw
            dw = dW[t, w - bounds[c]]
            for i in range(Dh):
                W[w, i] -= rate * (h[i] * dw) / sW[w, i]
            W[w, Dh] -= rate * dw / sW[w, Dh]
            for f in range(O.shape[1]):
                D[O[a + t, f] + w] -= drate * dw
        for f in range(Oc.shape[1]):
            for k in range(Uc.shape[1]):
                D[Oc[a + t, f] + k] -= drate * dC[t, k]
    _dense_step(I, P0[1], sI, E, dz, n, rate, dec)
    _dense_step(H, P0[3], sH, hs, dz, n, rate, dec)
    _dense_step(b1.reshape(1, -1), P0[2].reshape(1, -1), sb1.reshape(1, -1), ones, dz, n, rate, dec)
    _dense_step(Uc, P0[5], sUc, hs[1:], dC, n, rate, dec)
    _dense_step(bc.reshape(1, -1), P0[6].reshape(1, -1), sbc.reshape(1, -1), ones, dC, n, rate, dec)


@njit(cache=True, nogil=True)
def _segments(P, P0, S, D, x, y, cls, O, Oc, bounds, starts, h, losses, stampL, stampC, k, lr, dlr, decay):
    """Every segment [starts[i], starts[i+1]) in order; h carried in place. Returns k."""
    Dh, K = P[5].shape
    T = 1
    widest = 1
    for i in range(len(starts) - 1):
        T = max(T, starts[i + 1] - starts[i])
    for c in range(K):
        widest = max(widest, bounds[c + 1] - bounds[c])
    hs = np.empty((T + 1, Dh), h.dtype)
    E = np.empty((T, P[0].shape[1]), h.dtype)
    dC, dW = np.empty((T, K), h.dtype), np.empty((T, widest), h.dtype)
    dz, ones = np.empty((T, Dh), h.dtype), np.ones((T, 1), h.dtype)
    for i in range(len(starts) - 1):
        a, n = starts[i], starts[i + 1] - starts[i]
        if decay != 0.0:
            _catch_up(P, P0, x, cls, bounds, stampL, stampC, k, decay, a, a + n)
        hs[0] = h
        _forward(P, D, x, y, cls, O, Oc, bounds, a, n, hs, E, dC, dW, losses)
        _backward(P, cls, bounds, a, n, hs, dC, dW, dz)
        _step(P, P0, S, D, x, cls, O, Oc, bounds, a, n, hs, E, dC, dW, dz, ones, lr, dlr, decay)
        h[:] = hs[n]
        k += 1
    return k


class CompiledSegments:
    """``inference.dynamic``'s rule on a class-softmax model ``p`` (changed in
    place) with the ``Adapter``'s rates, θ0, scales and lazy stamps, by
    ``_segments``: the Adapter's state stays the one its own steps would
    leave (its ``finish`` then brings every lazy weight up to date)."""

    def __init__(self, p, adapt):
        if not p.classes or (p.D is not None and p.direct_hash != "elman"):
            raise ValueError("the compiled dynamic evaluation runs a class softmax with elman's direct connections")
        self.p, self.adapt = p, adapt
        self.P = (p.L, p.I, p.b1, p.H, word_rows(p.U, p.b2), p.Uc, p.bc)
        th = adapt.theta0
        self.P0 = self.P if not th else (th["L"], th["I"], th["b1"], th["H"], _stacked(th["U"], th["b2"]),
                                         th["Uc"], th["bc"])
        s = adapt.scale
        self.S = (tuple(np.ones_like(a) for a in self.P) if s is None else
                  tuple(np.ascontiguousarray(a, p.dtype) for a in
                        (s["L"], s["I"], s["b1"], s["H"], _stacked(s["U"], s["b2"]), s["Uc"], s["bc"])))
        self.D = p.D if p.D is not None else np.zeros(1, p.dtype)
        none = np.zeros(1, np.int64)
        self.stamps = (none if adapt.rows is None else adapt.rows, none if adapt.classes is None else adapt.classes)

    def __call__(self, x, y, starts, h, history=None):
        """-ln P (n,) float64 of targets y (n,) after inputs x (n,), one stream
        in segments [starts[i], starts[i+1]), each scored then stepped; h
        (Dh,) the state before, left as the state after; ``history``: the
        words before x (direct connections), None: none."""
        from elman.core.classes import word_classes
        from elman.core.direct import CLASSES, WORDS, contexts, offsets
        p, a = self.p, self.adapt
        x, y = np.ascontiguousarray(x, np.int64), np.ascontiguousarray(y, np.int64)
        if p.D is None:
            O = Oc = np.zeros((len(x), 0), np.int64)
        else:
            ctx = contexts(x[None], None if history is None else np.asarray(history).reshape(1, -1), p.order)
            O = offsets(ctx, p.order, p.D.size - p.V + 1, WORDS)
            Oc = offsets(ctx, p.order, p.D.size - p.classes + 1, CLASSES)
        losses = np.empty(len(x))
        rate = a.lr if a.direct_lr is None else a.direct_lr
        a.k = _segments(self.P, self.P0, self.S, self.D, x, y, word_classes(p.class_bounds, y), O, Oc,
                        np.asarray(p.class_bounds, np.int64), np.asarray(starts, np.int64), h, losses,
                        *self.stamps, a.k, float(a.lr), float(rate), float(a.decay))
        return losses


def word_rows(U, b2):
    """W = [U; b2]ᵀ (V,Dh+1), the writable word-major array ``Params`` keeps U and b2 in."""
    from elman.core.params import stacked_bias
    if stacked_bias(U, b2) is None or U.strides[0] > U.strides[1]:
        raise ValueError("U and b2 are not Params' word-major [U; b2]")
    return np.lib.stride_tricks.as_strided(U, shape=(U.shape[0] + 1, U.shape[1]), strides=U.strides).T


def _stacked(U, b2):
    """[U; b2]ᵀ (V,Dh+1) as a new contiguous array."""
    return np.ascontiguousarray(np.concatenate([U, b2[None, :]]).T)
