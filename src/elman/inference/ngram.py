"""An n-gram model (an ARPA file or a KenLM binary) queried with the
``kenlm`` package (``pip install 'elman[kenlm]'``), for interpolation.

Sentence boundaries agree with elman's: each line starts at ``<s>`` and
the n-gram model's ``</s>`` is the probability of elman's ``<eos>``, so
both models predict the same tokens. A word the n-gram model does not
know is its ``<unk>`` (KenLM's unknown-word probability, from the ARPA
file's ``<unk>`` entry), as a word elman does not know is elman's
``<unk>``: each model scores the text with its own vocabulary.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
from itertools import chain
from operator import itemgetter
from pathlib import Path

import numpy as np

from elman.errors import ElmanError

LN10 = math.log(10.0)


@contextlib.contextmanager
def _quiet_stderr():
    """KenLM writes loading chatter ("Loading the LM will be faster if you
    build a binary file.") straight to file descriptor 2; elman's stderr is
    for one-line messages. Errors come back as exceptions, not on stderr."""
    try:
        saved = os.dup(2)
    except OSError:                 # no stderr to quiet
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _reason(exc: Exception) -> str:
    """KenLM's message without its C++ location: what it says after 'threw X.'."""
    text = str(exc)
    found = re.search(r"threw \w+(?: because `[^']*')?\.\s*(.*?)\)?$", text, re.S)
    return " ".join((found.group(1) if found and found.group(1) else text).split())[:300]


class NgramModel:
    """``--ngram FILE``: per-token ln P of each line's words and ``</s>``."""

    def __init__(self, path):
        path = Path(path)
        if not path.is_file():
            raise ElmanError(f"{path}: no such file (--ngram wants an ARPA file or a KenLM binary)")
        try:
            import kenlm
        except ImportError:
            raise ElmanError("--ngram needs the kenlm package: pip install 'elman[kenlm]'") from None
        config = kenlm.Config()
        config.show_progress = False
        try:
            with _quiet_stderr():
                self.model = kenlm.Model(str(path), config)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ElmanError(f"{path}: not a readable ARPA file or KenLM binary ({_reason(exc)})") from None
        self.path, self.order = str(path), self.model.order

    def line(self, line) -> np.ndarray:
        """ln P_ngram of ``line``'s words then ``</s>``, from ``<s>``."""
        return self.lines([line])

    def lines(self, lines) -> np.ndarray:
        """``line`` of each of ``lines``, one array: KenLM's per-token
        tuples of all the lines gathered in one pass (no Python call a token)."""
        query = self.model.full_scores
        scores = chain.from_iterable(query(" ".join(line.tokens), bos=True, eos=True) for line in lines)
        return np.fromiter(map(itemgetter(0), scores), np.float64, sum(len(line.tokens) + 1 for line in lines)) * LN10

    def check(self, lines, tokens: int) -> None:
        """Nothing to check ahead: the model scores any text."""
