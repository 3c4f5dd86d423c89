"""The model's parameters: named and shaped as in the seed, with the optional
tensors of the class-factorised softmax and of the direct connections.

Data only (shapes, initialisation, conversions); ``elman.model``
computes with them.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from elman.core import direct as dc
from elman.core.classes import CLASS_NAMES, class_bounds

PARAM_NAMES = ("L", "I", "H", "U", "b1", "b2")
DIRECT_NAMES = ("D", "direct_order")
START_NAME = "h_start"


def stacked_bias(U, b2):
    """[U; b2] (Dh+1,V) as one array, without a copy, when b2 lies in memory
    as one more row of U (``Params`` keeps them so); else None.

    The bias trick: h U + b2 = [h, 1] · [U; b2], one product, where adding
    b2 after it would be one more pass over the (N,V) logits.
    """
    Dh, V = U.shape
    if b2.shape != (V,) or b2.dtype != U.dtype or b2.strides[0] != U.strides[1]:
        return None
    if b2.__array_interface__["data"][0] != U.__array_interface__["data"][0] + Dh * U.strides[0]:
        return None
    return np.lib.stride_tricks.as_strided(U, shape=(Dh + 1, V), strides=U.strides, writeable=False)


def with_ones(h, dtype=None):
    """[h, 1] (N,Dh+1): h with a column of ones, the left side of the bias trick."""
    h1 = np.empty((h.shape[0], h.shape[1] + 1), dtype or h.dtype)
    h1[:, :-1], h1[:, -1] = h, 1
    return h1


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


@dataclass
class Params:
    """The model's parameters, named and shaped as in the seed.

    L (V,d) embeddings, I (d,Dh) input weights, H (Dh,Dh) recurrent weights,
    U (Dh,V) output weights, b1 (Dh,) hidden bias, b2 (V,) output bias.

    Optional, for the class-factorised softmax (``elman.core.classes``; all
    three or none): Uc (Dh,K) class weights, bc (K,) class biases,
    class_bounds (K+1,) int64, class c = ids [bounds[c], bounds[c+1]).
    Optional, for direct connections (``elman.core.direct``; both or none):
    D (M,) the hashed n-gram weights, direct_order (1,) int64, the order N.
    Optional: h_start (Dh,) the state a stream starts from (``initial_state``;
    an import keeps RNNLM's saved state there); absent, h0 = 0.
    None fields are left out of ``as_dict``.

    U and b2 are views of one array, [U; b2] (Dh+1,V), b2 its last row (the
    bias trick, ``stacked_bias``), held in memory word by word:
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

    ``scoring`` (not a tensor): how scoring runs the model, "compiled" (the
    compiled time loop and class softmax of ``fast.scan`` and
    ``fast.classscore``, equal to the NumPy path to rounding) or "numpy"
    (the step-by-step NumPy path). A model file says which in config.json;
    files written before the key existed score by "numpy", so their
    figures stay the same to the last digit.
    """
    scoring = "compiled"            # a class attribute, not a field: as_dict holds tensors only

    L: np.ndarray
    I: np.ndarray
    H: np.ndarray
    U: np.ndarray
    b1: np.ndarray
    b2: np.ndarray
    Uc: np.ndarray | None = None
    bc: np.ndarray | None = None
    class_bounds: np.ndarray | None = None
    D: np.ndarray | None = None
    direct_order: np.ndarray | None = None
    h_start: np.ndarray | None = None
    # how D is hashed: "elman" (``core.direct``) or "rnnlm" (``core.rnnlm_direct``);
    # config.json's "direct_hash", absent for elman's (a setting, not a tensor)
    direct_hash = "elman"
    # with "rnnlm": the id out of RNNLM's vocabulary (config.json's "direct_oov"; None: none)
    direct_oov = None

    def __post_init__(self):
        # b2 is kept in memory as one more row of U, so that the logits
        # h U + b2 are one product [h, 1]·[U; b2] (``stacked_bias``).
        # Updates in place keep it so; a new U or b2 is copied in here.
        U, b2 = np.asarray(self.U), np.asarray(self.b2)
        if U.ndim == 2 and b2.shape == U.shape[1:] and b2.dtype == U.dtype and stacked_bias(U, b2) is None:
            self.U, self.b2 = word_major(U.shape[0], U.shape[1], U.dtype)
            self.U[...], self.b2[...] = U, b2

    @classmethod
    def init(cls, V: int, d: int, Dh: int, seed: int = 0, dtype="float32",
             classes: int = 0, counts=None, direct: int = 0, direct_order: int = 3) -> "Params":
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

        ``direct`` M > 0: direct connections of order ``direct_order``, a
        table of M weights, zero as in RNNLM (no draw, so the other tensors
        are the same as without).
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
        if direct:
            arrays.update(D=np.zeros(direct, dtype), direct_order=np.array([direct_order], np.int64))
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

    @property
    def order(self) -> int:
        """N of the direct connections, 0 without them."""
        return 0 if self.D is None else int(self.direct_order[0])

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
        direct = [n for n in DIRECT_NAMES if n in arrays]
        if len(direct) == 1:
            raise ValueError(f"direct connections need both {' and '.join(DIRECT_NAMES)}, got {direct[0]} alone")
        start = (START_NAME,) if START_NAME in arrays else ()
        p = cls(**{n: np.asarray(arrays[n]) for n in PARAM_NAMES + tuple(have) + tuple(direct) + start})
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
        if self.D is not None:
            dc.check(self.D, self.direct_order, V, self.classes)
        if self.h_start is not None and (self.h_start.shape != (Dh,) or self.h_start.dtype.kind != "f"):
            raise ValueError(f"tensor h_start has shape {self.h_start.shape} ({self.h_start.dtype}), "
                             f"expected ({Dh},) floats (Dh={Dh})")

    def copy(self) -> "Params":
        return self._like({k: v.copy() for k, v in self.as_dict().items()})

    def astype(self, dtype) -> "Params":
        """The float tensors cast to ``dtype`` (class_bounds stay integers)."""
        return self._like({k: v.astype(dtype) if v.dtype.kind == "f" else v.copy() for k, v in self.as_dict().items()})

    def _like(self, arrays: dict) -> "Params":
        out = type(self)(**arrays)
        out.scoring, out.direct_hash, out.direct_oov = self.scoring, self.direct_hash, self.direct_oov
        return out


def initial_state(p: Params, B: int) -> np.ndarray:
    """h0 (B,Dh) in p's dtype: where a stream starts, p.h_start in each row,
    or 0 for a model without one (every model elman trains). A line scored
    on its own starts at 0 instead, RNNLM's reset state (``-independent``;
    its ``-nbest`` never reads the saved state either)."""
    h0 = np.zeros((B, p.Dh), p.dtype)
    if p.h_start is not None:
        h0[...] = p.h_start
    return h0
