"""The language-model scores of an expanded lattice: elman's, batched by
depth, and the n-gram model's along the same histories.

Every state of an expanded lattice continues one parent's RNN state by one
word (or none). The start state has read ``<eos>`` from h0 = 0, as every
line ``elman score`` scores; so a path's elman score, word terms plus the
``<eos>`` after its last word, is the score ``elman score`` gives its words.
States at the same depth (words read) are advanced together, one batched
``rnn_step`` a depth; the output layer runs on blocks of the states that
have arcs or an end to score.
"""
from __future__ import annotations

import math

import numpy as np

from elman.core.layers import embedding_forward, rnn_step_forward
from elman.fast.threads import one_blas_thread
from elman.model import target_log_probs
from elman.lattice.expand import Expanded
from elman.lattice.graph import lm_word

LN10 = math.log(10.0)


def _ids(vocab, words) -> np.ndarray:
    eos, unk = vocab.eos_id, vocab.unk_id
    return np.array([eos if w == "</s>" else vocab.stoi.get(w, unk) for w in words], np.int64)


def hidden_states(p, vocab, ex: Expanded):
    """(rows (S,) int, H (R,Dh), context (R, N-1) or None): state s's RNN state is
    H[rows[s]]; a state entered without a word shares its parent's row."""
    S = len(ex.node)
    rows, depth = np.empty(S, np.int64), np.zeros(S, np.int64)
    parent_row, inputs, level = [-1], [vocab.eos_id], [0]
    rows[0] = 0
    for s in range(1, S):
        par = ex.parent[s]
        if ex.word[s] is None:
            rows[s], depth[s] = rows[par], depth[par]
        else:
            rows[s], depth[s] = len(inputs), depth[par] + 1
            parent_row.append(int(rows[par])), inputs.append(ex.word[s]), level.append(int(depth[s]))
    ids = np.concatenate([[vocab.eos_id], _ids(vocab, inputs[1:])]).astype(np.int64)
    parent_row, level = np.array(parent_row), np.array(level)
    H = np.empty((len(ids), p.Dh), p.dtype)
    with one_blas_thread():                 # a depth's products are small: threads cost more than they give
        a = embedding_forward(ids, p.L)[0] @ p.I + p.b1     # a = e I + b1 of every state at once
        H[0] = rnn_step_forward(np.zeros((1, p.Dh), p.dtype), a[:1], p.H)[0][0]
        for d in range(1, int(level.max()) + 1):
            at = np.flatnonzero(level == d)
            H[at] = rnn_step_forward(H[parent_row[at]], a[at], p.H)[0]
    context = None
    if p.D is not None:                     # the last N-1 ids read, -1 before the start
        n = p.order - 1
        context = np.full((len(ids), n), -1, np.int64)
        context[0, -1] = vocab.eos_id
        for r in range(1, len(ids)):        # parents come first
            context[r, :-1], context[r, -1] = context[parent_row[r], 1:], ids[r]
    return rows, H, context


def log_probs(p, H, context, requests) -> np.ndarray:
    """ln P(target | row) for each (row, target id) of ``requests`` (K,2), by
    scoring's own path (a class softmax computes only the targets' classes)."""
    requests = np.asarray(requests, np.int64).reshape(-1, 2)
    if not len(requests):
        return np.empty(0)
    rows, y = requests[:, 0], requests[:, 1]
    return target_log_probs(p, H[rows], y, None if context is None else context[rows])


class NgramStates:
    """An n-gram model (``elman.inference.ngram.NgramModel``) along the
    expanded lattice's histories: KenLM's state of each state."""

    def __init__(self, ngram, ex: Expanded):
        import kenlm
        self.model = ngram.model
        self.states = [kenlm.State()]
        self.model.BeginSentenceWrite(self.states[0])
        for s in range(1, len(ex.node)):
            par, w = ex.parent[s], ex.word[s]
            if w is None:
                self.states.append(self.states[par])
            else:
                st = kenlm.State()
                self.model.BaseScore(self.states[par], w, st)
                self.states.append(st)
        self._scratch = kenlm.State()

    def ln_p(self, s: int, word: str) -> float:
        return self.model.BaseScore(self.states[s], word, self._scratch) * LN10


def terms(p, vocab, ex: Expanded, ngram=None):
    """The LM terms of an expanded lattice: for each expanded arc, (elman's
    ln P, the n-gram's ln P or None) of its word, or None without a word;
    for each final state, the same of ``<eos>`` after it, or None where its
    last word is an end marker."""
    rows, H, context = hidden_states(p, vocab, ex)
    req, slots = [], []
    arc_words = [lm_word(ex.lat.arcs[i].word) for _, _, i in ex.arcs]
    for k, ((s, _, _), w) in enumerate(zip(ex.arcs, arc_words)):
        if w is not None:
            req.append((rows[s], w)), slots.append(("arc", k, s, w))
    for f in ex.finals:
        if not ex.history[f] or ex.history[f][-1] != "</s>":
            req.append((rows[f], "</s>")), slots.append(("final", f, f, "</s>"))
    ids = _ids(vocab, [w for _, w in req])
    lp = log_probs(p, H, context, np.column_stack([[r for r, _ in req], ids]) if req else [])
    ng = NgramStates(ngram, ex) if ngram is not None else None
    arc_terms, final_terms = [None] * len(ex.arcs), {}
    for (kind, k, s, w), e in zip(slots, lp):
        t = (float(e), ng.ln_p(s, w) if ng else None)
        if kind == "arc":
            arc_terms[k] = t
        else:
            final_terms[k] = t
    return arc_terms, final_terms
