"""Corpus files: reading, decoding and tokenising text.

Text conventions (PTB, as in Mikolov's RNNLM toolkit):

- A file is UTF-8 (or ``encoding``); ``\\r\\n`` and a lone ``\\r`` end a line
  like ``\\n``; a UTF-8 byte-order mark at the start is dropped.
- Blank lines (nothing but whitespace) are skipped: they hold no sentence.
- Word level: each line's whitespace-separated tokens, then ``<eos>``.
- Char level: each line's characters as they are (a space is the token
  ``" "``, tabs and other spaces likewise), then ``<eos>``.
"""
from __future__ import annotations

import errno
from pathlib import Path

from elman.errors import ElmanError

EOS = "<eos>"
UNK = "<unk>"
LEVELS = ("word", "char")
CORPUS_FILES = ("train.txt", "valid.txt", "test.txt")


# -- reading text ---------------------------------------------------------------

def read_error(path, exc: OSError) -> ElmanError:
    """The one-line error for a text file that cannot be opened or read."""
    if isinstance(exc, FileNotFoundError):
        return ElmanError(f"{path}: no such file")
    if isinstance(exc, IsADirectoryError) or exc.errno == errno.EISDIR:
        return ElmanError(f"{path}: is a directory, expected a text file")
    if isinstance(exc, PermissionError):
        return ElmanError(f"{path}: cannot read it (permission denied)")
    return ElmanError(f"{path}: cannot read it ({exc.strerror or exc})")


def read_text(path, encoding: str = "utf-8") -> str:
    """The decoded text of ``path``; every failure is one ElmanError naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise read_error(path, exc) from None
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
    check_level(level)
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


def check_level(level: str) -> None:
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
