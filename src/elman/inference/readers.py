"""The input readers of ``elman score`` and ``elman eval`` (``--format``):
what a text to score is made of, read as it comes.

A reader (``READERS``, by the name ``--format`` gives) has ``read`` and
``check`` of a path, both yielding or counting :class:`Line`s, and says
whether the lines of one ``uid`` are ``alternatives``, hypotheses of one
utterance scored from one start state. ``lines``: a plain line is a
sentence. ``nbest``: an n-best line (``--format nbest``, the format of
Mikolov's RNNLM and the toolkits that feed it) is an utterance id, then
whitespace, then one hypothesis; the id is not scored, and the hypotheses
of one utterance are consecutive lines with the same id.

Checked here, each as one line naming the input and the line: an n-best
line that is only an id (a list written without ids would otherwise lose
every first word), and an id that
comes back after another one (the hypotheses of an utterance must be
consecutive, or "the same start" would mean nothing).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Iterator

import numpy as np

from elman import progress
from elman.data import EOS, line_tokens
from elman.data.stream import STDIN, iter_lines
from elman.errors import ElmanError


@dataclass
class Line:
    """One input line as scored: ``ids`` are its tokens' ids then ``<eos>``,
    one target per predicted token; ``tokens`` the same tokens as written
    (without ``<eos>``); ``uid`` the utterance id of an n-best line."""
    number: int
    tokens: list
    ids: np.ndarray
    uid: str | None = None


def split_nbest(text: str, level: str, where: str) -> tuple[str, list]:
    """(utterance id, hypothesis tokens) of one n-best line."""
    parts = text.strip().split(None, 1) if level == "word" else text.lstrip().split(None, 1)
    if not parts:
        raise ElmanError(f"{where}: blank; an n-best line is an utterance id, then the hypothesis")
    if len(parts) == 1 or not parts[1].strip():
        raise ElmanError(f"{where}: only an utterance id ({parts[0]!r}), no hypothesis; an n-best line is "
                         "'ID word word ...' (without --nbest every token is scored)")
    return parts[0], line_tokens(parts[1], level)


def read_lines(path, vocab, level: str = "word", encoding: str = "utf-8", nbest: bool = False,
               keep_blank: bool = True, encode: bool = True) -> Iterator[Line]:
    """The lines of ``path`` ("-": standard input) as :class:`Line`, read as
    they come. ``keep_blank``: a blank line is an empty sentence (just
    ``<eos>``; score keeps every line so its output stays aligned with the
    input), else it is skipped (eval, training). The ids of utterances
    already ended are remembered to catch one coming back (a set of ids,
    not of lines). ``encode`` False: ``ids`` is None (a pass that only checks and counts)."""
    name = "standard input" if str(path) == STDIN else str(path)
    seen, current, started = set(), None, 0
    for number, text in enumerate(iter_lines(path, encoding), 1):
        where = f"{name}: line {number}"
        uid = None
        if nbest:
            uid, tokens = split_nbest(text, level, where)
            if uid != current:
                if uid in seen:
                    raise ElmanError(f"{where}: utterance id {uid!r} comes back after {current!r} (line {started}); "
                                     "the hypotheses of an utterance must be consecutive lines")
                seen.add(uid)
                current, started = uid, number
        else:
            tokens = line_tokens(text, level)
            if not tokens and not keep_blank:
                continue
        yield Line(number, tokens, vocab.encode(tokens + [EOS]) if encode else None, uid)


def check_lines(path, vocab, level: str, encoding: str, nbest: bool, keep_blank: bool) -> int:
    """Read the whole input once, as ``read_lines`` will, and return its
    number of predicted tokens: every error of the input is found before the
    first score is written. A file with nothing to score is an error."""
    lines = read_lines(path, vocab, level, encoding, nbest, keep_blank, encode=False)
    lines = progress.track(lines, f"reading {path}", "lines")
    words = n = 0
    for line in lines:
        words += len(line.tokens)
        n += 1
    tokens = words + n                  # each line's tokens and its <eos>
    if not words:
        raise ElmanError(f"{path}: empty or whitespace-only file, no text to score")
    return tokens


class Reader:
    """The interface of an input format; ``read`` yields the lines of
    ``path`` as they come, ``check`` reads it whole first (every error
    before the first score) and returns its number of predicted tokens."""

    name: ClassVar[str] = ""
    alternatives: ClassVar[bool] = False

    def read(self, path, vocab, level: str, encoding: str, keep_blank: bool) -> Iterator[Line]:
        return read_lines(path, vocab, level, encoding, self.alternatives, keep_blank)

    def check(self, path, vocab, level: str, encoding: str, keep_blank: bool) -> int:
        return check_lines(path, vocab, level, encoding, self.alternatives, keep_blank)


class PlainLines(Reader):
    """One sentence a line."""
    name = "lines"


class NbestLines(Reader):
    """'ID hypothesis' a line; the lines of one ID are consecutive alternatives."""
    name = "nbest"
    alternatives = True


READERS = {r.name: r for r in (PlainLines(), NbestLines())}
