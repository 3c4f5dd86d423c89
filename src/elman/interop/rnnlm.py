"""RNNLM's model <-> elman's: the same function, other parameters.

RNNLM's step, with no biases: h(t) = σ(syn0[:, w] + R h(t-1)), R the
state's columns of syn0, and P(w) = P(c(w)) P(w | c(w)) from the logits
syn1 h(t) (the class rows after the word rows). Its state starts at 1.0
(``netReset``; ``-test`` without ``-independent`` starts from the state
saved in the file), elman's at h0 = 0. Both are read through h' = 1 - h,
itself an Elman state: 1 - σ(a) = σ(-a), so

    h'(t) = σ(-syn0[:, w] - R·1 + R h'(t-1)),   logits = syn1·1 - syn1 h'

which is elman's step with L = -syn0[:, :V]ᵀ, I = 1 (d = Dh), H = Rᵀ,
b1 = -R·1, U = -syn1ᵀ, b2 = syn1·1, and h' starts at 0 exactly where h
starts at 1. The saved state s becomes the model's starting state
h_start = 1 - s (``core.params.initial_state``), where a stream starts,
unless the file is in independent sentences mode (then ``-test`` resets
to 1.0 before the first word: no h_start).
Words are renumbered so that each class is a range of ids (RNNLM's
classes by frequency already are, but a file need not be).

Back (``from_elman``): RNNLM's state is r = 1 - h plus one unit that stays
at 1 (its own weight of ``HOLD`` saturates the sigmoid, and RNNLM's state
starts at 1.0), which carries b1 and b2; the saved state is 1 - h_start
(1 without one) and 1 in that unit; L·I is folded into syn0; a full
softmax is one class holding every word; ``</s>`` becomes word 0, as
RNNLM requires. Direct connections go both ways when hashed RNNLM's way
(``core.rnnlm_direct``), which hashes the word indices: these stay elman's
ids (RNNLM's classes are runs of indices, ``</s>`` first).
"""
from __future__ import annotations

import numpy as np

from elman.core import rnnlm_direct
from elman.core.params import Params
from elman.data.corpus import EOS, UNK
from elman.data.vocab import Vocab
from elman.errors import ElmanError
from elman.interop.rnnlm_file import RnnlmModel, assign_classes

HOLD = 40.0                     # the constant unit's weight on itself: σ(40) = 1 in float32 (and 64)
NEVER = -50.0                   # b2 of an <unk> the RNNLM file lacks: a word it never predicts


def to_elman(m: RnnlmModel, where: str = "") -> tuple:
    """(Params, Vocab, config) of an RNNLM model; its direct connections, if
    any, keep RNNLM's hashing (config "direct_hash": "rnnlm"), which hashes
    RNNLM's word indices: they stay elman's ids."""
    V, Dh = len(m.words), m.syn0.shape[0]
    K = max(m.K, 1)
    perm = np.argsort(m.classes, kind="stable")         # elman id -> RNNLM index
    words = [EOS if m.words[i] == "</s>" else m.words[i] for i in perm]
    if EOS in m.words[1:] or (m.words[0] != "</s>"):
        raise ElmanError(f"{where}: the vocabulary must hold </s> once, as word 0")
    W, R = m.syn0[:, :V].astype(np.float64), m.syn0[:, V:].astype(np.float64)
    S1 = m.syn1.astype(np.float64)
    arrays = dict(L=-W.T[perm], I=np.eye(Dh), H=R.T, b1=-R.sum(axis=1),
                  U=-S1[:V][perm].T, b2=S1[:V][perm].sum(axis=1))
    independent = int(m.header.get("independent sentences mode", 0) or 0)
    if not independent:
        arrays["h_start"] = 1 - m.hidden.astype(np.float64)
    counts = m.counts[perm]
    bounds = np.searchsorted(m.classes[perm], np.arange(K + 1)).astype(np.int64)
    if (np.diff(bounds) <= 0).any():
        raise ElmanError(f"{where}: class {int(np.flatnonzero(np.diff(bounds) <= 0)[0])} has no words")
    if m.K > 1:                                          # one class: P(c) = 1, a full softmax
        arrays.update(Uc=-S1[V:V + K].T, bc=S1[V:V + K].sum(axis=1), class_bounds=bounds)
    if UNK not in words:                                 # elman's vocabulary always has <unk>
        words.append(UNK)
        counts = np.append(counts, 0)
        arrays["L"] = np.vstack([arrays["L"], np.zeros(Dh)])
        arrays["U"] = np.hstack([arrays["U"], np.zeros((Dh, 1))])
        arrays["b2"] = np.append(arrays["b2"], NEVER)
        if "class_bounds" in arrays:
            arrays["class_bounds"][-1] += 1
    if m.direct.size:
        if (perm != np.arange(V)).any():
            raise ElmanError(f"{where}: the classes are not runs of words in file order, which RNNLM's hashing "
                             "of its direct connections needs")
        arrays.update(D=m.direct, direct_order=np.array([m.order], np.int64))
    try:
        p = Params(**{k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in arrays.items()})
        p.check_shapes()
        if m.direct.size:
            rnnlm_direct.check(p.D, p.direct_order, p.V, p.classes)
    except ValueError as exc:
        raise ElmanError(f"{where}: {exc}") from None
    p.direct_hash = "rnnlm" if m.direct.size else "elman"
    if m.direct.size and UNK not in m.words:            # RNNLM's -1: its direct features stop there
        p.direct_oov = len(words) - 1
    config = {"level": "word", "rnnlm": {"source": where, "version": int(m.header.get("version", 10)),
                                         "independent": independent}}
    if m.direct.size:
        config["direct_hash"] = "rnnlm"
        if p.direct_oov is not None:
            config["direct_oov"] = p.direct_oov
    return p, Vocab(words, counts), config


def from_elman(p: Params, vocab: Vocab) -> RnnlmModel:
    """The RNNLM model that computes what ``p`` does (see the module)."""
    itos, eos = list(vocab.itos), vocab.eos_id
    if p.direct_oov is not None:
        p, itos = _without_oov(p, itos)
    if p.D is not None and p.direct_hash != "rnnlm":
        raise ElmanError("this model has direct connections hashed elman's way; RNNLM reads only its own "
                         "hashing: export a model trained with --direct-hash rnnlm, or without --direct")
    V, Dh = p.V, p.Dh
    f = lambda a: np.asarray(a, np.float64)             # noqa: E731
    L, I, H, U, b1, b2 = (f(x) for x in (p.L, p.I, p.H, p.U, p.b1, p.b2))
    if p.classes:
        cls_of = np.searchsorted(p.class_bounds, np.arange(V), side="right") - 1
        Uc, bc, K = f(p.Uc), f(p.bc), p.classes
    else:
        cls_of, Uc, bc, K = np.zeros(V, np.int64), np.zeros((Dh, 1)), np.zeros(1), 1
    # RNNLM index -> elman id: </s> first, as RNNLM requires, so its class
    # first, then each class's words in turn: RNNLM assigns classes to
    # runs of words (``rnnlm_counts``)
    first = int(cls_of[eos])
    class_order = [first] + [c for c in range(K) if c != first]
    order = np.array([i for c in class_order for i in sorted(np.flatnonzero(cls_of == c),
                                                             key=lambda i: (i != eos, i))])
    Uc, bc = Uc[:, class_order], bc[class_order]
    new_class = np.empty(K, np.int64)
    new_class[class_order] = np.arange(K)
    words = ["</s>" if i == eos else itos[i] for i in order]
    syn0 = np.zeros((Dh + 1, V + Dh + 1))
    syn0[:Dh, :V] = -(L @ I)[order].T                    # the word's column, for r = 1 - h
    syn0[:Dh, V:V + Dh] = H.T
    syn0[:Dh, V + Dh] = -b1 - H.sum(axis=0)             # through the unit that stays at 1
    syn0[Dh, V + Dh] = HOLD
    syn1 = np.zeros((V + K, Dh + 1))
    syn1[:V, :Dh] = -U[:, order].T
    syn1[:V, Dh] = b2[order] + U[:, order].sum(axis=0)
    syn1[V:, :Dh] = -Uc.T
    syn1[V:, Dh] = bc + Uc.sum(axis=0)
    classes = new_class[cls_of[order]]
    direct, N = np.zeros(0, np.float32), 3
    if p.D is not None:                                 # RNNLM's hashing hashes the ids: they must stay
        if (order != np.arange(V)).any():
            raise ElmanError("RNNLM's hashing of the direct connections needs <eos> as id 0 (as "
                             "elman train --direct-hash rnnlm makes it); this model's <eos> is id "
                             f"{eos}")
        direct, N = np.asarray(p.D, np.float32), p.order
    hidden = np.ones(Dh + 1, np.float32)
    if p.h_start is not None:
        hidden[:Dh] = 1 - f(p.h_start)
    return RnnlmModel(words, rnnlm_counts(classes, K), classes, K, hidden,
                      syn0.astype(np.float32), syn1.astype(np.float32), direct, N, old_classes=1)


def _without_oov(p: Params, itos: list) -> tuple:
    """``p`` and its words ``itos`` less the id out of RNNLM's vocabulary (the last:
    the <unk> ``to_elman`` added), which RNNLM reads as -1, not as a word."""
    oov = p.direct_oov
    if oov != p.V - 1 or (p.classes and p.class_bounds[-1] - p.class_bounds[-2] < 2):
        raise ElmanError(f"the word out of RNNLM's vocabulary (id {oov}) is not the last of a class of "
                         "others, as an import adds it; not exported")
    arrays = p.as_dict()
    arrays.update(L=arrays["L"][:oov], U=arrays["U"][:, :oov], b2=arrays["b2"][:oov])
    if p.classes:
        arrays["class_bounds"] = np.r_[arrays["class_bounds"][:-1], oov]
    q = Params.from_dict(arrays)
    q.direct_hash = p.direct_hash
    return q, itos[:oov]


def rnnlm_counts(classes, K: int) -> np.ndarray:
    """Word counts from which RNNLM's ``old classes`` binning (running share
    of the counts past (a+1)/K) gives back ``classes`` (runs 0, 1, ... K-1 in
    order): each class holds T counts (the first one more), its last word
    most of them, so the running share passes (c+1)/K at that word exactly
    (by (K-c-1)/(K(KT+1)), far above rounding) and not before."""
    classes = np.asarray(classes)
    T = max(10 ** 6, 10 * len(classes))
    counts = np.ones(len(classes), np.int64)
    for c in range(K):
        at = np.flatnonzero(classes == c)
        counts[at[-1]] = T - (len(at) - 1) + (1 if c == 0 else 0)
    assert (assign_classes(counts, K, True) == classes).all()
    return counts
