"""Corpus files, the vocabulary, token streams and batches.

Text conventions (PTB, as in Mikolov's RNNLM toolkit):

- A file is UTF-8 (or ``encoding``); ``\\r\\n`` and a lone ``\\r`` end a line
  like ``\\n``; a UTF-8 byte-order mark at the start is dropped.
- Blank lines (nothing but whitespace) are skipped: they hold no sentence.
- Word level: each line's whitespace-separated tokens, then ``<eos>``.
- Char level: each line's characters as they are (a space is the token
  ``" "``, tabs and other spaces likewise), then ``<eos>``.

Batches: ``batchify`` cuts the id stream into B contiguous streams (the tail
that does not fill a row is dropped); ``iter_batches`` walks them in windows of
T steps whose targets are the inputs shifted by one. The last window is kept
even when shorter than T, so no training text is lost; window k always starts
at column k*T, which is what lets a trainer resume at batch index k.
"""
from __future__ import annotations

import errno
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from elman.atomic import atomic_write_text
from elman.errors import ElmanError

EOS = "<eos>"
UNK = "<unk>"
LEVELS = ("word", "char")
CORPUS_FILES = ("train.txt", "valid.txt", "test.txt")


# -- reading text ---------------------------------------------------------------

def read_text(path, encoding: str = "utf-8") -> str:
    """The decoded text of ``path``; every failure is one ElmanError naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ElmanError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ElmanError(f"{path}: is a directory, expected a text file") from None
    except PermissionError:
        raise ElmanError(f"{path}: cannot read it (permission denied)") from None
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise ElmanError(f"{path}: is a directory, expected a text file") from None
        raise ElmanError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        text = data.decode(encoding)
    except LookupError:
        raise ElmanError(f"unknown text encoding {encoding!r} (reading {path})") from None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ElmanError(
            f"{path}: not valid {encoding}: byte 0x{data[exc.start]:02x} at offset {exc.start} "
            f"(line {line}); pass --encoding if the file uses another one") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


def text_lines(text: str) -> list[str]:
    """Lines of ``text`` split on \\n, \\r\\n or \\r only (not on form feeds
    and the other breaks ``str.splitlines`` knows), so a line never contains
    \\n or \\r and a char-level token can always be written into vocab.txt."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def line_tokens(line: str, level: str = "word") -> list[str]:
    """The tokens of one line without its ``<eos>``; empty for a blank line."""
    if not line.strip():
        return []
    return line.split() if level == "word" else list(line)


def read_lines(path, level: str = "word", encoding: str = "utf-8") -> list[list[str]]:
    """Each non-blank line's tokens (without ``<eos>``), for per-sentence scoring."""
    _check_level(level)
    text = read_text(path, encoding)
    lines = [toks for toks in (line_tokens(ln, level) for ln in text_lines(text)) if toks]
    if not lines:
        raise ElmanError(f"{path}: empty or whitespace-only file, no text to read")
    return lines


def read_tokens(path, level: str = "word", encoding: str = "utf-8") -> list[str]:
    """The file as one token stream: each non-blank line's tokens then ``<eos>``."""
    tokens: list[str] = []
    for toks in read_lines(path, level, encoding):
        tokens.extend(toks)
        tokens.append(EOS)
    return tokens


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ElmanError(f"unknown level {level!r}: use one of {', '.join(LEVELS)}")


def resolve_corpus(train, valid=None, test=None) -> tuple[Path, Path, Path | None]:
    """Paths of the train, valid and test files.

    ``train`` may be a corpus directory holding train.txt and valid.txt (and
    optionally test.txt), the PTB/WikiText layout; files named explicitly by
    ``valid`` / ``test`` take precedence over the directory's.
    """
    train = Path(train)
    if train.is_dir():
        found = {name: train / name for name in CORPUS_FILES if (train / name).is_file()}
        if "train.txt" not in found:
            raise ElmanError(f"{train}: corpus directory without train.txt "
                             f"(expected {', '.join(CORPUS_FILES)}); or pass --train FILE")
        if valid is None and "valid.txt" not in found:
            raise ElmanError(f"{train}: corpus directory without valid.txt; add it or pass --valid FILE")
        return (found["train.txt"],
                Path(valid) if valid is not None else found["valid.txt"],
                Path(test) if test is not None else found.get("test.txt"))
    if not train.exists():
        raise ElmanError(f"{train}: no such file or corpus directory")
    if valid is None:
        raise ElmanError(f"{train}: a validation file is needed: pass --valid FILE "
                         "(or --train a directory holding train.txt and valid.txt)")
    return train, Path(valid), Path(test) if test is not None else None


# -- the vocabulary ---------------------------------------------------------------

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
        """The vocabulary of a training stream.

        Keeps tokens seen at least ``min_count`` times, at most ``max_vocab``
        entries in all (``<eos>`` and ``<unk>`` included); the rest become
        ``<unk>``, whose count absorbs theirs.
        """
        if max_vocab is not None and max_vocab < 2:
            raise ElmanError(f"--max-vocab must be at least 2 (<eos> and <unk>), got {max_vocab}")
        if min_count < 1:
            raise ElmanError(f"--min-count must be at least 1, got {min_count}")
        counter = Counter(tokens)  # insertion order = first occurrence
        first = {tok: i for i, tok in enumerate(counter)}
        words = [t for t, c in counter.most_common() if c >= min_count and t not in (EOS, UNK)]
        if max_vocab is not None:
            words = words[:max_vocab - 2]
        kept = set(words)
        unk = counter.get(UNK, 0) + sum(c for t, c in counter.items() if t not in kept and t not in (EOS, UNK))
        final = {t: counter[t] for t in words}
        final[EOS] = counter.get(EOS, 0)
        final[UNK] = unk
        absent = len(first)  # specials missing from the data sort after the rest
        order = sorted(final, key=lambda t: (-final[t], first.get(t, absent), t))
        return cls(order, [final[t] for t in order])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        get, unk = self.stoi.get, self.unk_id
        return np.fromiter((get(t, unk) for t in tokens), dtype=np.int64)

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

def check_enough(ids, B: int, T: int, path=None) -> None:
    """Refuse a stream too short to fill one (B, T) batch with its targets."""
    need = B * (T + 1)
    if len(ids) < need:
        where = f"{path}: " if path is not None else ""
        raise ElmanError(f"{where}too little text for one batch: need at least B*(T+1) = "
                         f"{B}*({T}+1) = {need} tokens, file has {len(ids)}")


def batchify(ids, B: int) -> np.ndarray:
    """``(B, n)``: B contiguous streams, stream b = ids[b*n:(b+1)*n]; the tail is dropped."""
    ids = np.asarray(ids, dtype=np.int64)
    if B < 1:
        raise ElmanError(f"the batch size must be positive, got {B}")
    n = len(ids) // B
    if n < 2:
        raise ElmanError(f"too little text for {B} streams: need at least {2 * B} tokens, got {len(ids)}")
    return ids[:n * B].reshape(B, n)


def num_batches(streams: np.ndarray, T: int) -> int:
    """Windows per pass: ceil((n-1)/T), the last possibly shorter than T."""
    return -(-(streams.shape[1] - 1) // T)


def iter_batches(streams: np.ndarray, T: int, start: int = 0) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(k, inputs, targets)`` for windows k = start, start+1, ...;
    inputs = streams[:, kT : kT+t], targets = streams[:, kT+1 : kT+1+t], t <= T."""
    if T < 1:
        raise ElmanError(f"the BPTT length must be positive, got {T}")
    n = streams.shape[1]
    for k in range(start, num_batches(streams, T)):
        i = k * T
        t = min(T, n - 1 - i)
        yield k, streams[:, i:i + t], streams[:, i + 1:i + 1 + t]
