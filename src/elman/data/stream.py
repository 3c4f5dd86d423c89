"""Text read as it comes: the lines of a file or of standard input, decoded
in chunks, so memory holds one chunk and the line being read, whatever the
file's size (``elman score`` and the per-token paths of ``elman eval``).

The conventions are ``corpus.read_text``'s and ``corpus.text_lines``':
``\\n``, ``\\r\\n`` and a lone ``\\r`` end a line, a UTF-8 byte-order mark at
the start is dropped, a decoding error names the file, the byte offset and
the line; the newline that ends the last line does not start another.
"""
from __future__ import annotations

import codecs
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from elman.data.corpus import read_error
from elman.errors import ElmanError

CHUNK = 1 << 20
STDIN = "-"


def _open_binary(path):
    """The binary stream of ``path`` ("-": standard input); errors as one line."""
    if str(path) == STDIN:
        return sys.stdin.buffer, False
    try:
        return open(path, "rb"), True
    except OSError as exc:
        raise read_error(path, exc) from None


def _decoder(path, encoding: str):
    try:
        return codecs.getincrementaldecoder(encoding)()
    except LookupError:
        raise ElmanError(f"unknown text encoding {encoding!r} (reading {path})") from None


def iter_lines(path, encoding: str = "utf-8", chunk: int = CHUNK) -> Iterator[str]:
    """Each line of ``path`` (or of standard input for "-"), without its end."""
    name = "standard input" if str(path) == STDIN else path
    decoder = _decoder(name, encoding)
    f, close = _open_binary(path)
    offset, newlines, head, cr, first = 0, 0, [], False, True
    try:
        while True:
            data = f.read(chunk)
            text = _decode(decoder, data, name, encoding, offset, newlines)
            offset, newlines = offset + len(data), newlines + data.count(b"\n")
            if first and text:
                text, first = (text[1:] if text.startswith("\ufeff") else text), False
            if cr:
                text = "\r" + text
            cr = bool(data) and text.endswith("\r")    # a \r\n may be cut between two chunks
            if cr:
                text = text[:-1]
            parts = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
            # The unfinished line is kept in pieces: a long line is joined once, not once a chunk.
            head.append(parts[0])
            if len(parts) > 1:
                yield "".join(head)
                yield from parts[1:-1]
                head = [parts[-1]]
            if not data:
                last = "".join(head)
                if last:                       # "" after the newline ending the last line
                    yield last
                return
    finally:
        if close:
            f.close()


def _decode(decoder, data: bytes, name, encoding: str, offset: int, newlines: int) -> str:
    """One chunk through the incremental decoder; an error names the byte, its offset and line."""
    pending = decoder.getstate()[0]           # bytes of a character cut by the previous chunk
    try:
        return decoder.decode(data, final=not data)
    except UnicodeDecodeError as exc:
        seen = pending + data                  # exc.start counts from the pending bytes
        line = newlines + seen.count(b"\n", 0, exc.start) + 1
        raise ElmanError(f"{name}: not valid {encoding}: byte 0x{seen[exc.start]:02x} at offset "
                         f"{offset - len(pending) + exc.start} (line {line}); pass --encoding if the file "
                         "uses another one") from None


def is_stream(path) -> bool:
    """Standard input ("-"), a pipe, socket or terminal: readable once."""
    if str(path) == STDIN:
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # whoever opens it says what is wrong with it
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def spool(path) -> tuple[str, callable]:
    """A regular file holding the text of ``path``: ``path`` itself, or for
    standard input or a pipe (``/dev/stdin``, a FIFO) a temporary copy (for a
    command that must read its input twice, e.g. to count tokens before
    writing the first score, or to cache its token ids). Returns (file name,
    cleanup function)."""
    if not is_stream(path):
        return str(path), lambda: None
    fd, name = tempfile.mkstemp(prefix="elman-stdin-", suffix=".txt")
    try:
        source, close = _open_binary(path)
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
        finally:
            if close:
                source.close()
    except OSError as exc:
        os.unlink(name)
        what = "standard input" if str(path) == STDIN else path
        raise ElmanError(f"cannot keep {what} in a temporary file ({exc.strerror or exc})") from None
    except BaseException:
        os.unlink(name)
        raise
    return name, lambda: Path(name).unlink(missing_ok=True)
