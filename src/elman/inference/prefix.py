"""N-best hypotheses scored through a prefix trie: each distinct prefix's
recurrence and each distinct (prefix, next token) log-probability computed
once.

The hypotheses of one start (h0 after ``<eos>``, and with direct
connections the words before) that begin with the same words reach the
same states after them: a recogniser's n-best list is near-copies of one
sentence, differing mostly late, so most of a list's positions are
prefixes that another hypothesis has already read. Here the rows (id
arrays, each ending in ``<eos>``) are read into a trie: a root a start,
a node a prefix, its state the one after the prefix's last id; the edge
into a node is that id as a target, scored at the parent's state. A
row's losses are those of the edges along its path. Direct connections'
features are the last N-1 words read, which a node's prefix (and its
root's words before) determines, so sharing is exact for them too.

The trie runs depth by depth: the nodes at one depth with children
advance together (one step of the recurrence for all of them, a matrix
product), and the edges into the next depth are scored together by the
model's own scoring path (``model.target_log_probs``: a class softmax
computes only the targets' logits). The next depth's recurrence, which
needs one core, runs beside this depth's output layer. A depth costs a
few calls whatever its width, so once at most ``TAIL`` rows run on, the
rest of each runs in windows from its node's state (``rows.batched``, a
compiled loop over the row), and the trie is built no deeper. Memory:
one depth's states and contexts, and the output layer's bounded blocks.
"""
from __future__ import annotations

import numpy as np

from elman.core.layers import embedding_forward, rnn_step_forward
from elman.fast.recurrence import threaded_input_forward
from elman.fast.threads import beside, one_blas_thread
from elman.inference.rows import batched
from elman.model import target_log_probs

TAIL = 16     # rows still running at or under which the rest of them runs in windows


class Trie:
    """The prefixes of ``rows``: node r < R is root r (it has read
    ``<eos>``); every other node continues ``parent`` by ``token``. Nodes
    are numbered depth by depth (ids read after the root's ``<eos>``),
    those of depth d being ``cuts[d]:cuts[d+1]``. ``paths[i]``: row i's
    nodes, one per id, so row i's k-th target is scored on the edge into
    ``paths[i][k]``. ``ids``: the rows one after another, row i from
    ``starts[i]`` (nothing is padded: memory follows the ids, however
    unequal the rows).

    Built a depth at a time: the rows still running at depth k give
    (their node at k - 1, their k-th id) pairs, and the distinct pairs
    (``np.unique``) are the nodes of depth k; ``depth``: no deeper than
    that (a path then holds a row's first ``depth`` nodes)."""

    def __init__(self, rows, roots, R: int, eos_id: int, depth: int | None = None):
        self.lengths = np.array([len(r) for r in rows], np.int64)
        self.ids = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)   # row i at starts[i]
        self.starts = np.cumsum(self.lengths) - self.lengths
        self.roots, self.R = np.array(roots, np.int64).reshape(len(rows)), R
        order = np.argsort(-self.lengths, kind="stable")       # the rows running at depth k come first
        span = int(self.ids.max(initial=0)) + 1
        node, nodes = self.roots[order], np.empty(len(self.ids), np.int64)    # nodes: each id's, as ids
        parent, token, self.cuts = [np.full(R, -1)], [np.full(R, eos_id)], [0, R]
        width = int(self.lengths.max(initial=0))
        for k in range(width if depth is None else min(width, depth)):
            live = int(np.count_nonzero(self.lengths > k))
            at = self.starts[order[:live]] + k
            pairs, inverse = np.unique(node[:live] * span + self.ids[at], return_inverse=True)
            node[:live] = nodes[at] = self.cuts[-1] + inverse.reshape(-1)
            parent.append(pairs // span), token.append(pairs % span)
            self.cuts.append(self.cuts[-1] + len(pairs))
        self.parent, self.token = np.concatenate(parent), np.concatenate(token).astype(np.int64)
        built = len(self.cuts) - 2
        self.paths = [nodes[s:s + min(n, built)] for s, n in zip(self.starts, self.lengths)]

    def __len__(self) -> int:
        return len(self.parent)

    def levels(self) -> list:
        """For each depth d: (the nodes at d with children, every root at
        depth 0; the nodes at d + 1), each in increasing node ids."""
        c = self.cuts
        below = [np.arange(c[d + 1], c[d + 2]) for d in range(len(c) - 2)]
        here = [np.arange(self.R)] + [np.unique(self.parent[b]) for b in below[1:]]
        return list(zip(here, below))


def _step(p, h_prev, ids, table=None):
    """h after reading ``ids`` (B,) from ``h_prev`` (B,Dh): the reference
    step, one (B,Dh)(Dh,Dh) product for the B rows of a depth (their steps
    are independent; a stream's are not, which is why a window's
    recurrence runs compiled, ``fast.scan``: the two agree to rounding).
    ``table``: e I + b1 of every word (``perplexity.input_table``), whose
    rows are read in place of the product."""
    if table is not None:
        return rnn_step_forward(h_prev, table[ids], p.H)[0]
    e, _ = embedding_forward(ids, p.L)
    return rnn_step_forward(h_prev, threaded_input_forward(e, p.I, p.b1), p.H)[0]


def trie_losses(p, rows: list, eos_id: int, roots=None, h0=None, history=None, table=None) -> list:
    """-ln P of each target (float64 arrays) of each id array in ``rows``
    (each ending in ``<eos>``), as ``rows.batched`` gives them: row i
    from start ``roots[i]`` (default 0 for all), start r from the state
    h0[r] (default 0) before ``<eos>`` and, with direct connections, after
    the words history[r] (default none). Once at most ``TAIL`` rows run
    on, what is left of them runs in windows (``_tails``). ``table``: e I
    + b1 of every word (``perplexity.input_table``), for the steps and the
    windows."""
    roots = [0] * len(rows) if roots is None else list(roots)
    R = max(roots, default=-1) + 1
    longest = sorted((len(r) for r in rows), reverse=True)
    trie = Trie(rows, roots, R, eos_id, max(longest[TAIL] if TAIL < len(longest) else 0, 1))
    h = np.zeros((R, p.Dh), p.dtype) if h0 is None else np.asarray(h0, p.dtype).reshape(R, p.Dh)
    ctx = None
    if p.D is not None:          # each node's last N-1 ids read, -1 for none
        n = max(p.order - 2, 0)
        words = np.full((R, n), -1, np.int64) if history is None else np.asarray(history, np.int64).reshape(R, -1)
        ctx = np.concatenate([words[:, words.shape[1] - n:], np.full((R, 1), eos_id)], axis=1)
    lp = np.zeros(len(trie))
    pos = np.zeros(len(trie), np.int64)      # a node's row in its depth's states
    with one_blas_thread():      # one depth's products are small: BLAS's threads would only spin
        states = _step(p, h, np.full(R, eos_id, np.int64), table)
        levels = trie.levels()
        for d, (here, below) in enumerate(levels):
            pos[here] = np.arange(len(here))
            running = np.flatnonzero(trie.lengths > d + 1)      # the rows with targets past depth d + 1
            tail = len(running) <= TAIL
            inner = levels[d + 1][0] if d + 1 < len(levels) and not tail else below[:0]
            at = pos[trie.parent[inner]]
            ids = trie.token[inner]
            later = beside(lambda s=states, at=at, ids=ids: _step(p, s[at], ids, table)) if len(inner) else None
            rows_of = pos[trie.parent[below]]
            lp[below] = target_log_probs(p, states[rows_of], trie.token[below],
                                         None if ctx is None else ctx[rows_of])
            if tail:
                return _tails(p, trie, lp, running, d, states, pos, ctx, eos_id, table)
            if ctx is not None:
                ctx = np.concatenate([ctx[at, 1:], trie.token[inner, None]], axis=1)
            states = later()
    return [-lp[path] for path in trie.paths]


def _tails(p, trie: Trie, lp, running, d: int, states, pos, ctx, eos_id: int, table=None) -> list:
    """Each row's losses: those of its edges to depth d + 1, then, for the
    ``running`` rows, those of the rest of the row run in windows
    (``rows.batched``) from the state of its node at depth d (which has
    read its id d - 1), reading its id d first. A row's steps one at a
    time cost a call each, a depth of the trie a few: with few rows left
    the windows' compiled loop over the row is much the faster."""
    out = [-lp[path[:d + 1]] for path in trie.paths]
    if not len(running):
        return out
    nodes = trie.roots[running] if d == 0 else np.array([trie.paths[i][d - 1] for i in running])
    at = pos[nodes]
    start = trie.starts[running]
    rest = batched(p, [trie.ids[s + d + 1:s + n] for s, n in zip(start, trie.lengths[running])], eos_id,
                   states[at], history=None if ctx is None else ctx[at], first=trie.ids[start + d], table=table)
    for i, losses in zip(running, rest):
        out[i] = np.concatenate([out[i], losses])
    return out
