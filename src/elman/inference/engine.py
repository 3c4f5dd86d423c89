"""Per-token log-probabilities of lines, in bounded memory.

Three ways to run the model over lines (each line's targets are its ids
then ``<eos>``; the word before a line's first token is ``<eos>``):

* ``stream``: the lines are one stream, the state carried from each line
  into the next (``elman eval``; ``elman score --carry``, RNNLM's ``-test``
  without ``-independent``). Windows as eval's (``perplexity.window_of``).
* ``rows.batched``: each line from a start state of its own (h0 = 0 for
  ``score`` and ``--independent``), many lines a batch.
* n-best: the hypotheses of one start through a prefix trie
  (``prefix``), every hypothesis from h0 = 0 or, with ``--carry``, every
  hypothesis of utterance u from the state S_u; S_1 = 0 and S_(u+1) is
  the state after u's first hypothesis (after its last word, before its
  ``<eos>`` is read), as RNNLM's ``-nbest`` carries it: the first
  hypotheses form one stream (``-nbest`` never reads the state saved in
  its model file, so neither does S_1).

Memory: the (positions × V) logits of one step are the only V-sized
array (``rows.positions_of`` positions a batch, eval's stream window, a
depth of the trie in blocks). A line of any length is cut into windows
with its state carried, the same numbers as one pass. Lines are read
``GROUP`` tokens at a time (at least one line, whole utterances), sorted
by length so that a batch wastes little on padding, and handed back in
input order.
"""
from __future__ import annotations

from collections import deque
from typing import Iterable, Iterator

import numpy as np

from elman.model import initial_state, window_losses
from elman.model.perplexity import input_table, window_of    # eval's stream windows and table
from elman.inference.prefix import trie_losses
from elman.inference.rows import batched

GROUP = 1 << 18       # tokens read ahead, then sorted by length: batches of lines of 4096
                      # positions then pad 2% (KJV verses; 6.5% at 1 << 16), about 16 MB of lines held


def _groups(lines: Iterable, tokens: int | None = None) -> Iterator[list]:
    """Consecutive lists of lines holding about ``tokens`` (default ``GROUP``) tokens each."""
    tokens = GROUP if tokens is None else tokens
    group, n = [], 0
    for line in lines:
        group.append(line)
        n += len(line.ids)
        if n >= tokens:
            yield group
            group, n = [], 0
    if group:
        yield group


# -- one stream ------------------------------------------------------------------

def stream(p, lines: Iterable, eos_id: int, window: int | None = None, h0=None, states: bool = False, history=None,
           table=None):
    """Yield (line, losses) for each line in order, -ln P of each target
    (float64), the lines read as one stream from ``h0`` (default the
    model's starting state, ``initial_state``; with
    direct connections ``history``, the words before, default none).
    ``states``: yield (line, losses, S) with S the state after the line's
    last word (the one its ``<eos>`` is read with). ``window``: default
    eval's (``perplexity.window_of``); ``table``: as ``window_losses``'."""
    window = window_of(p, window)
    spans = deque()           # per window: [(entry, start in line, count)]
    pending = deque()         # entries [line, losses, filled, S] of the lines not yet handed back

    def windows():
        xs, ys, span, have = [], [], [], 0
        for line in lines:
            entry = [line, np.empty(len(line.ids)), 0, None]
            pending.append(entry)
            x = np.concatenate([[eos_id], line.ids[:-1]])
            at = 0
            while at < len(x):
                take = min(window - have, len(x) - at)
                xs.append(x[at:at + take]), ys.append(line.ids[at:at + take]), span.append((entry, at, take))
                at, have = at + take, have + take
                if have == window:
                    spans.append(span)
                    yield np.concatenate(xs)[None], np.concatenate(ys)[None]
                    xs, ys, span, have = [], [], [], 0
        if have:
            spans.append(span)
            yield np.concatenate(xs)[None], np.concatenate(ys)[None]

    h0 = initial_state(p, 1) if h0 is None else np.asarray(h0, p.dtype).reshape(1, -1)
    history = None if history is None else np.asarray(history).reshape(1, -1)
    for losses, hs in window_losses(p, windows(), h0, history, states=states, table=table):
        col = 0
        for entry, at, take in spans.popleft():
            entry[1][at:at + take] = losses[0, col:col + take]
            entry[2] += take
            col += take
            if states and entry[2] == len(entry[1]):
                entry[3] = hs[col - 1, 0].copy()
        while pending and pending[0][2] == len(pending[0][1]):
            line, out, _, state = pending.popleft()
            yield (line, out, state) if states else (line, out)


# -- lines as score reads them ----------------------------------------------------

def line_losses(p, lines: Iterable, eos_id: int, carry: bool = False, alternatives: bool = False,
                tokens: int | None = None) -> Iterator:
    """(line, -ln P of each target) for each line, in input order.

    Plain lines: each from h0 = 0 (``--independent``, the default; RNNLM's
    reset state), or one stream (``carry``) from the model's starting state. ``alternatives`` (the reader's: n-best lines, the
    lines of one ``uid`` alternatives of one utterance): every hypothesis of an utterance from
    the same start, h0 = 0 or (``carry``) the state after the previous
    utterance's first hypothesis, through a prefix trie of the
    hypotheses of one start (``prefix``). Identical lines with the same
    start are run once, so identical hypotheses get identical scores.
    ``tokens``: how many the lines hold, when known: eval's input table
    (``perplexity.input_table``) serves them where it pays; unknown, it is
    built once a group of lines holds enough tokens."""
    table = input_table(p, tokens or 0)
    if carry and not alternatives:
        yield from stream(p, lines, eos_id, table=table)
        return
    chain = np.zeros(p.Dh, p.dtype)         # carry: the start of the next utterance
    words = _words_before(p, None, None, eos_id)     # and the words before it (direct connections)
    for group in (_utterance_groups(lines) if alternatives else _groups(lines)):
        utterance = _utterances(group)
        if carry:
            firsts = [line for i, line in enumerate(group) if i == 0 or utterance[i] != utterance[i - 1]]
            after = [s for _, _, s in stream(p, firsts, eos_id, h0=chain, states=True, history=words)]
            before = [words]
            for line in firsts:
                before.append(_words_before(p, before[-1], line.ids, eos_id))
            starts, chain, words = [chain] + after[:-1], after[-1], before[-1]
        index, rows, root = {}, [], []
        for line, u in zip(group, utterance):
            key = (u if carry else 0, line.ids.tobytes())
            if key not in index:
                index[key] = len(rows)
                rows.append(line.ids)
                root.append(key[0])
        if table is None:
            table = input_table(p, sum(len(r) for r in rows))
        if alternatives:        # hypotheses share prefixes: each distinct one is run once (``prefix``)
            losses = trie_losses(p, rows, eos_id, root, np.array(starts) if carry else None,
                                 np.array(before[:-1]) if carry and p.D is not None else None, table)
        else:                   # plain lines without carry: each from h0 = 0
            losses = batched(p, rows, eos_id, table=table)
        for line, u in zip(group, utterance):
            yield line, losses[index[u if carry else 0, line.ids.tobytes()]]


def _words_before(p, before, ids, eos_id: int):
    """With direct connections of order N: the N-2 words read before the
    next line, after ``before`` and then a line (read as ``<eos>`` and its
    ids but the last); -1 for none. None without direct connections."""
    if p.D is None:
        return None
    n = max(p.order - 2, 0)
    seq = np.full(n, -1, np.int64) if before is None else before
    if ids is not None:
        seq = np.concatenate([seq, [eos_id], ids[:-1]])
    return seq[len(seq) - n:]


def _utterances(group: list) -> list:
    """The utterance ordinal of each line of a group: lines with the same
    id in a row share one (a plain line, ``uid`` None, is one on its own)."""
    out, k = [], -1
    for i, line in enumerate(group):
        if line.uid is None or i == 0 or line.uid != group[i - 1].uid:
            k += 1
        out.append(k)
    return out


def _utterance_groups(lines: Iterable, tokens: int | None = None) -> Iterator[list]:
    """Like ``_groups``, cut only between utterances: all the hypotheses of
    one utterance are scored together."""
    tokens = GROUP if tokens is None else tokens
    group, n = [], 0
    for line in lines:
        if n >= tokens and line.uid != group[-1].uid:
            yield group
            group, n = [], 0
        group.append(line)
        n += len(line.ids)
    if group:
        yield group
