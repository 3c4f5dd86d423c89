"""A lattice as both readers give it: nodes, arcs with words and scores, a
start and final nodes, checked to be a graph that can be rescored.

Scores are natural-log probabilities (higher is better), whatever the file
held: ``ac`` the acoustic log-likelihood, ``lm`` the language model's
log-probability (Kaldi's graph cost, negated). Each arc and final weight
keeps the line of the file it came from, so every complaint names it, and
``extra``, what the format holds beyond words and scores (HTK's other
fields, Kaldi's transition ids), written back as read.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from elman.errors import ElmanError

# Words that carry no language-model score of their own: HTK's null node,
# sentence-start markers, Kaldi's epsilon. The end markers are scored as
# elman's <eos>.
NULL_WORDS = frozenset({"!NULL", "<s>", "!SENT_START", "<eps>"})
END_WORDS = frozenset({"</s>", "!SENT_END"})


@dataclass
class Arc:
    src: int
    dst: int
    word: str | None          # None: no word (epsilon, !NULL)
    ac: float
    lm: float
    line: int                 # where it was read
    extra: object = None


@dataclass
class Final:
    ac: float
    lm: float
    line: int
    extra: object = None


@dataclass
class Lattice:
    name: str                  # the utterance
    where: str                 # the file it came from
    nodes: int
    start: int
    arcs: list
    finals: dict               # node -> Final
    meta: dict = field(default_factory=dict)

    def check(self) -> list:
        """The nodes in a topological order; ElmanError naming the file and line
        of the first problem (a link to a missing node, a cycle, no path)."""
        n = self.nodes
        if not 0 <= self.start < n:
            raise ElmanError(f"{self.where}: utterance {self.name}: the start node {self.start} is not one of "
                             f"its {n} nodes")
        if not self.finals:
            raise ElmanError(f"{self.where}: utterance {self.name}: no end (final) node")
        for node, fin in self.finals.items():
            if not 0 <= node < n:
                raise ElmanError(f"{self.where}:{fin.line}: the final node {node} is not one of its {n} nodes")
        out = [[] for _ in range(n)]
        indegree = [0] * n
        for i, arc in enumerate(self.arcs):
            for end in (arc.src, arc.dst):
                if not 0 <= end < n:
                    raise ElmanError(f"{self.where}:{arc.line}: a link to node {end}, which is not one of the "
                                     f"{n} nodes")
            out[arc.src].append(i)
            indegree[arc.dst] += 1
        order = [v for v in range(n) if indegree[v] == 0]
        for v in order:                         # Kahn: grows while it is read
            for i in out[v]:
                w = self.arcs[i].dst
                indegree[w] -= 1
                if indegree[w] == 0:
                    order.append(w)
        if len(order) < n:
            arc = self._cycle_arc(indegree)
            raise ElmanError(f"{self.where}:{arc.line}: the lattice has a cycle (through this link, "
                             f"{arc.src} -> {arc.dst}); a lattice must be acyclic")
        self._reachable(out)
        return order

    def _cycle_arc(self, indegree) -> Arc:
        """An arc on a cycle: every node Kahn's pass left has a predecessor it
        left too, so walking back through them must come round."""
        into = {}
        for a in self.arcs:
            if indegree[a.dst] > 0 and indegree[a.src] > 0:
                into.setdefault(a.dst, a)
        v, seen = next(iter(into)), set()
        while v not in seen:
            seen.add(v)
            v = into[v].src
        return into[v]

    def _reachable(self, out) -> None:
        seen, todo = {self.start}, [self.start]
        while todo:
            for i in out[todo.pop()]:
                if self.arcs[i].dst not in seen:
                    seen.add(self.arcs[i].dst)
                    todo.append(self.arcs[i].dst)
        if not any(f in seen for f in self.finals):
            raise ElmanError(f"{self.where}: utterance {self.name}: no path from the start node {self.start} "
                             f"to an end node")

    def out_arcs(self) -> list:
        out = [[] for _ in range(self.nodes)]
        for i, arc in enumerate(self.arcs):
            out[arc.src].append(i)
        return out


def lm_word(word: str | None) -> str | None:
    """What the language model reads for an arc's word: None for no word,
    ``</s>`` for an end marker, else the word."""
    if word is None or word in NULL_WORDS:
        return None
    return "</s>" if word in END_WORDS else word


def best_path(lat: Lattice, order, lm_scale: float, penalty: float, lm=None, final_lm=None):
    """The highest-scoring path (Viterbi) under ac + lm_scale·lm + penalty per
    word, with the arcs' LM scores ``lm`` (default the lattice's own) and the
    finals' ``final_lm``. Returns (score, [arc indices])."""
    NEG = float("-inf")
    score = [NEG] * lat.nodes
    back = [-1] * lat.nodes
    score[lat.start] = 0.0
    out = lat.out_arcs()
    for v in order:
        if score[v] == NEG:
            continue
        for i in out[v]:
            a = lat.arcs[i]
            s = score[v] + a.ac + lm_scale * (a.lm if lm is None else lm[i]) + (penalty if counts(a.word) else 0.0)
            if s > score[a.dst]:
                score[a.dst], back[a.dst] = s, i
    best, end = NEG, -1
    for node, fin in lat.finals.items():
        s = score[node] + fin.ac + lm_scale * (fin.lm if final_lm is None else final_lm[node])
        if s > best:
            best, end = s, node
    path = []
    while end != lat.start and end >= 0:
        i = back[end]
        path.append(i)
        end = lat.arcs[i].src
    return best, path[::-1]


def counts(word: str | None) -> bool:
    """Whether an arc's word takes the word penalty: a word, not a marker."""
    return word is not None and word not in NULL_WORDS and word not in END_WORDS


def path_words(lat: Lattice, path) -> list:
    return [lat.arcs[i].word for i in path if counts(lat.arcs[i].word)]
