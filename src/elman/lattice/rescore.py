"""New LM scores on an expanded lattice, and its best path.

A path's score is the recogniser's: Σ ac + lm_scale·Σ lm + word_penalty
per word. The LM score of an arc becomes

* elman's ln P of its word (the default: the old LM score replaced);
* ln(λ·P_elman + (1-λ)·exp(old)) with ``lam`` alone (the old score read
  as the probability of the arc's word under the lattice's n-gram model);
* old - ln P_ngram + ln(λ·P_elman + (1-λ)·P_ngram) with ``ngram``, the
  n-gram model the lattice was made with: its score taken out, the
  interpolation put in, whatever else the old score held (pronunciation
  and transition probabilities in a Kaldi graph cost) kept.

An arc without a word keeps its old LM score. The end of the sentence
(``<eos>``, the n-gram's ``</s>``) is scored after the last word unless the
path ends in an end marker: in a Kaldi lattice into the final weight, in an
HTK lattice, which has none, into the link that enters the end node.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from elman.lattice.expand import Expanded, Overflow, expand
from elman.lattice.graph import Arc, Final, Lattice, best_path, path_words
from elman.lattice.lm import terms


@dataclass
class Settings:
    lm_scale: float = 1.0
    penalty: float = 0.0
    lam: float | None = None           # None: replace (or 0.5 with an n-gram model)
    max_history: int | None = None     # None: exact expansion
    max_arcs: int | None = None


@dataclass
class Result:
    name: str
    lattice: Lattice                   # rescored (expanded), or the input where it was kept
    words: list                        # the best path's words
    score: float
    arcs: int = 0                      # arcs of the expanded lattice (0: kept)
    kept: str | None = None            # why the old scores were kept
    extra: dict = field(default_factory=dict)


def _mix(e: float, g: float, lam: float) -> float:
    a = math.log(lam) + e if lam > 0 else -math.inf
    b = math.log1p(-lam) + g if lam < 1 else -math.inf
    top = max(a, b)
    return top + math.log(math.exp(a - top) + math.exp(b - top))


def new_lm(old: float, parts: list, lam: float | None, ngram: bool) -> float:
    """An arc's (or final weight's) new LM score from its old one and the
    (ln P_elman, ln P_ngram) of each token it scores (see the module)."""
    if not parts:
        return old
    if ngram:
        w = 0.5 if lam is None else lam
        return old + sum(_mix(e, g, w) - g for e, g in parts)
    e = sum(e for e, _ in parts)
    return e if lam is None else _mix(e, old, lam)


def rescored(ex: Expanded, arc_terms, final_terms, s: Settings, ngram: bool) -> Lattice:
    """The expanded lattice with its new LM scores."""
    lat = ex.lat
    into_end = lat.meta.get("format") == "slf"         # no final weights: <eos> on the arcs into the end
    arcs = []
    for (src, dst, i), t in zip(ex.arcs, arc_terms):
        a = lat.arcs[i]
        parts = [] if t is None else [t]
        if into_end and dst in final_terms:
            parts.append(final_terms[dst])
        arcs.append(Arc(src, dst, a.word, a.ac, new_lm(a.lm, parts, s.lam, ngram), a.line, a.extra))
    finals = {}
    for f in ex.finals:
        old = lat.finals[ex.node[f]]
        parts = [] if into_end or f not in final_terms else [final_terms[f]]
        finals[f] = Final(old.ac, new_lm(old.lm, parts, s.lam, ngram), old.line, old.extra)
    meta = dict(lat.meta, node_of=list(ex.node))
    return Lattice(lat.name, lat.where, len(ex.node), 0, arcs, finals, meta)


def rescore(lat: Lattice, p, vocab, s: Settings, ngram=None) -> Result:
    """Check, expand and rescore one lattice; past ``s.max_arcs`` it is kept
    with its old scores (``Result.kept`` says so) and its best path is the old one."""
    order = lat.check()
    try:
        ex = expand(lat, order, s.max_history, s.max_arcs, s.lm_scale, s.penalty)
    except Overflow as exc:
        score, path = best_path(lat, order, s.lm_scale, s.penalty)
        return Result(lat.name, lat, path_words(lat, path), score, kept=str(exc))
    arc_terms, final_terms = terms(p, vocab, ex, ngram)
    new = rescored(ex, arc_terms, final_terms, s, ngram is not None)
    score, path = best_path(new, range(new.nodes), s.lm_scale, s.penalty)
    return Result(lat.name, new, path_words(new, path), score, arcs=len(new.arcs),
                  extra={"states": new.nodes})


def keep(lat: Lattice, s: Settings) -> Result:
    """A lattice's own best path, its scores unchanged."""
    score, path = best_path(lat, lat.check(), s.lm_scale, s.penalty)
    return Result(lat.name, lat, path_words(lat, path), score)


__all__ = ["Settings", "Result", "rescore", "keep", "new_lm"]
