"""The vocabulary: token <-> id, ids by descending training count."""
from __future__ import annotations

from collections import Counter
from itertools import repeat
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from elman.atomic import atomic_write_text
from elman.data.corpus import EOS, UNK, read_text, text_lines
from elman.errors import ElmanError


class Vocab:
    """Token <-> id. Ids follow descending training frequency (ties: first
    occurrence), so frequency bins of a class softmax are contiguous id ranges.
    ``<eos>`` and ``<unk>`` are always present."""

    def __init__(self, itos: Sequence[str], counts=None, path=None):
        where = f"{path}: " if path is not None else ""
        self.itos = list(itos)
        if len(self.itos) < 2:
            raise ElmanError(f"{where}a vocabulary needs at least 2 tokens, got {len(self.itos)}")
        self.stoi = {}
        for i, tok in enumerate(self.itos):
            if not isinstance(tok, str) or tok == "" or "\n" in tok or "\r" in tok:
                raise ElmanError(f"{where}token {i} ({tok!r}) is empty or holds a line break")
            if tok in self.stoi:
                raise ElmanError(f"{where}token {tok!r} appears twice (ids {self.stoi[tok]} and {i})")
            self.stoi[tok] = i
        for special in (EOS, UNK):
            if special not in self.stoi:
                raise ElmanError(f"{where}the vocabulary has no {special} token")
        self.counts = None if counts is None else np.asarray(counts, dtype=np.int64)
        if self.counts is not None and self.counts.shape != (len(self.itos),):
            raise ElmanError(f"{where}{self.counts.size} counts for {len(self.itos)} tokens")
        self.unk_id = self.stoi[UNK]
        self.eos_id = self.stoi[EOS]

    @classmethod
    def build(cls, tokens: Iterable[str], max_vocab: int | None = None, min_count: int = 1) -> "Vocab":
        """The vocabulary of a training stream (see ``from_counts``)."""
        counter = Counter(tokens)  # insertion order = first occurrence
        return cls.from_counts(list(counter), list(counter.values()), max_vocab, min_count)

    @classmethod
    def from_counts(cls, tokens: Sequence[str], counts, max_vocab: int | None = None,
                    min_count: int = 1) -> "Vocab":
        """The vocabulary of a training stream given as its distinct ``tokens``
        in order of first occurrence and their ``counts``: what a streaming
        count of a corpus of any size gives.

        Keeps tokens seen at least ``min_count`` times, at most ``max_vocab``
        entries in all (``<eos>`` and ``<unk>`` included); the rest become
        ``<unk>``, whose count absorbs theirs. Ids by descending count, ties
        by first occurrence; a special absent from the data sorts after
        every token of its count (``<eos>`` before ``<unk>``).
        """
        if max_vocab is not None and max_vocab < 2:
            raise ElmanError(f"--max-vocab must be at least 2 (<eos> and <unk>), got {max_vocab}")
        if min_count < 1:
            raise ElmanError(f"--min-count must be at least 1, got {min_count}")
        tokens = list(tokens)
        counts = np.asarray(counts, dtype=np.int64).reshape(-1)
        if len(tokens) != len(counts):
            raise ValueError(f"{len(tokens)} tokens and {len(counts)} counts")
        n = len(tokens)
        first = {t: i for i, t in enumerate(tokens) if t in (EOS, UNK)}
        words = np.ones(n, dtype=bool)
        words[list(first.values())] = False
        words = np.flatnonzero(words & (counts >= min_count))
        words = words[np.argsort(-counts[words], kind="stable")]  # count descending, ties: first seen
        if max_vocab is not None:
            words = words[:max_vocab - 2]
        eos = int(counts[first[EOS]]) if EOS in first else 0
        unk = int(counts.sum() - counts[words].sum()) - eos
        # The specials take their place by (count, first occurrence); one
        # absent from the data comes after every token of its count, <eos>
        # before <unk>.
        key_count = np.concatenate([-counts[words], [-eos, -unk]])
        key_first = np.concatenate([words, [first.get(EOS, n), first.get(UNK, n + 1)]])
        order = np.lexsort((key_first, key_count))
        itos = [tokens[i] for i in words.tolist()] + [EOS, UNK]
        return cls([itos[i] for i in order.tolist()], (-key_count)[order])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        tokens = list(tokens)        # map over a dict's get runs in C: no Python frame a token
        return np.fromiter(map(self.stoi.get, tokens, repeat(self.unk_id, len(tokens))), np.int64, len(tokens))

    def decode(self, ids) -> list[str]:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.itos)):
            bad = int(ids[(ids < 0) | (ids >= len(self.itos))][0])
            raise ElmanError(f"token id {bad} outside the vocabulary of {len(self.itos)}")
        return [self.itos[i] for i in ids.tolist()]

    def unk_rate(self, ids: np.ndarray) -> float:
        """Fraction of ``ids`` that are ``<unk>`` (for a warning on foreign text)."""
        return float(np.mean(ids == self.unk_id)) if len(ids) else 0.0

    def to_text(self) -> str:
        return "".join(t + "\n" for t in self.itos)

    def save(self, path) -> None:
        """vocab.txt: one token a line, id = 0-based line number (atomic)."""
        atomic_write_text(path, self.to_text())

    @classmethod
    def from_text(cls, text: str, counts=None, path=None) -> "Vocab":
        # Split on \n only and strip nothing: at char level a line may be a
        # single space, and that space is the token.
        if text and not text.endswith("\n"):
            text += "\n"
        return cls(text.split("\n")[:-1], counts, path)

    @classmethod
    def load(cls, path, counts=None) -> "Vocab":
        return cls.from_text(read_text(path, "utf-8"), counts, path)


# -- streams and batches ------------------------------------------------------------
