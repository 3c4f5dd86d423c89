"""Expansion of a lattice so that every state has one word history.

An n-gram model needs the last n-1 words, which a lattice made with it
already separates; the RNN's state depends on every word before, so a node
reached by two different word sequences must be split into one state per
history before the RNN can score the arcs leaving it. Exact expansion
keeps every distinct history (the lattice becomes a tree of prefixes where
paths differ, rejoined where they read the same words); ``max_history`` N
merges the states whose histories agree on their last N words (Kaldi's
``--max-ngram-order`` n merges on the last n-1), which bounds the growth to
what an N+1-gram would need.

A merged state keeps one RNN state: that of its incoming history with the
best score under the lattice's own scores (the forward Viterbi score), the
history a decoder would most likely have kept. With N at least the number
of words of the longest path no two histories merge, and the result is the
exact expansion's.

``max_arcs`` bounds the expanded lattice: passing it raises ``Overflow``
(the caller keeps that utterance's old scores).
"""
from __future__ import annotations

from dataclasses import dataclass

from elman.lattice.graph import Lattice, counts, lm_word


class Overflow(Exception):
    """The expanded lattice would have more arcs than allowed."""

    def __init__(self, arcs: int, limit: int):
        super().__init__(f"its expansion passes --max-arcs {limit} (at {arcs} arcs)")
        self.arcs, self.limit = arcs, limit


@dataclass
class Expanded:
    """States of an expanded lattice, in a topological order (state 0 is the start).

    ``node[s]``: the lattice node; ``parent[s]``: the state whose RNN state s
    continues (-1 for the start), reading ``word[s]`` (None: no word, the
    parent's state unchanged); ``arcs``: (src state, dst state, lattice arc);
    ``finals``: the states at final nodes; ``history[s]``: its key."""
    lat: Lattice
    node: list
    parent: list
    word: list
    history: list
    arcs: list
    finals: list


def _key(history: tuple, word: str | None, max_history: int | None) -> tuple:
    if word is None:
        return history
    history = history + (word,)
    return history if max_history is None or len(history) <= max_history else history[len(history) - max_history:]


def expand(lat: Lattice, order, max_history: int | None = None, max_arcs: int | None = None,
           lm_scale: float = 1.0, penalty: float = 0.0) -> Expanded:
    """The expanded lattice (see the module's docstring); ``order`` is a
    topological order of ``lat``'s nodes (``Lattice.check``); ``lm_scale``
    and ``penalty`` weigh the old scores that choose a merged state's history."""
    out = lat.out_arcs()
    states_at = [dict() for _ in range(lat.nodes)]     # node -> {key: state}
    node, parent, word, history, fwd = [lat.start], [-1], [None], [()], [0.0]
    incoming = [[]]                                    # state -> [(score, src state, arc)] until it is settled
    states_at[lat.start][()] = 0
    arcs, topo = [], []
    NEG = float("-inf")
    for v in order:
        for s in states_at[v].values():
            topo.append(s)
            if incoming[s]:                            # settle: the best incoming history is its RNN state
                score, src, i = max(incoming[s], key=lambda t: (t[0], -t[1]))
                fwd[s], parent[s], word[s] = score, src, lm_word(lat.arcs[i].word)
                incoming[s] = None
            for i in out[v]:
                a = lat.arcs[i]
                w = lm_word(a.word)
                key = _key(history[s] if s >= 0 else (), w, max_history)
                t = states_at[a.dst].get(key)
                if t is None:
                    t = len(node)
                    states_at[a.dst][key] = t
                    node.append(a.dst), parent.append(-1), word.append(None), history.append(key)
                    fwd.append(NEG), incoming.append([])
                arcs.append((s, t, i))
                if max_arcs is not None and len(arcs) > max_arcs:
                    raise Overflow(len(arcs), max_arcs)
                incoming[t].append((fwd[s] + a.ac + lm_scale * a.lm + (penalty if counts(a.word) else 0.0), s, i))
    # renumber so that the states are in topological order
    new = {s: k for k, s in enumerate(topo)}
    pick = lambda xs: [xs[s] for s in topo]            # noqa: E731
    return Expanded(lat, pick(node), [new.get(parent[s], -1) for s in topo], pick(word), pick(history),
                    [(new[s], new[t], i) for s, t, i in arcs],
                    [new[s] for s in topo if node[s] in lat.finals])
