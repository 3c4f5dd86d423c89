"""Tokenising a corpus file in parts, on every core, with today's rules.

The file is cut into parts at line ends (``part_bounds``); each part is
read, decoded and tokenised on its own (``tokenise_part``) into its
distinct tokens in order of first occurrence, their counts, and the part's
ids in that local numbering. ``tokenise_file`` runs the parts in worker
processes and yields them in file order, so whoever merges them sees the
file's tokens in order: the global first occurrence of a token is in the
first part that holds it, at its place in that part's list.

The rules are those of ``corpus.read_tokens`` (the reference the tests hold
this to): lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r``; a line of
nothing but whitespace is skipped; a word-level line is ``str.split()`` of
it then ``<eos>``; a char-level line is its characters then ``<eos>``; a
UTF-8 byte-order mark at the start of the file is dropped.

Cutting at a ``\\n`` byte is only safe where that byte is always a line end
and the decoder keeps no state across lines (UTF-8, ASCII, the Latin and
other single- or multi-byte ASCII-compatible codecs); any other encoding
(UTF-16, UTF-32, UTF-7, ISO-2022) is read as one part.
"""
from __future__ import annotations

import codecs
import multiprocessing
import os
import re
import signal
from array import array
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Iterator

import numpy as np

from elman.data.corpus import EOS, check_level, read_error
from elman.errors import ElmanError

# Bump when a change here could change any token or id: it is part of the
# token-id cache's key, so old cache entries are then never reused.
TOKENISER_VERSION = 1
PART_BYTES = 4 << 20        # ~600k words a part: small lists in the workers, enough parts to share
_STATEFUL = ("utf-7", "hz") # decoders with state across lines (and iso2022_*, see _cuttable)
_ASCII_WS_OTHER = (b"\x1c", b"\x1d", b"\x1e", b"\x1f")  # str.split() splits on these, bytes.split() does not


@dataclass
class Part:
    """One part of a file: ``keys`` its distinct tokens in order of first
    occurrence, ``counts`` theirs, ``ids`` the part's tokens as indices into
    ``keys`` (``<eos>`` included, blank lines gone); ``stop`` the byte
    offset in the file just after it."""
    keys: list
    counts: np.ndarray
    ids: np.ndarray
    stop: int = 0

    def __len__(self) -> int:
        return len(self.ids)


def codec_name(encoding: str, path) -> str:
    """The codec's canonical name (part of the cache key); one line if unknown."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise ElmanError(f"unknown text encoding {encoding!r} (reading {path})") from None


def _cuttable(codec: str) -> bool:
    return ("\n\r".encode(codec) == b"\n\r" and codec not in _STATEFUL and not codec.startswith("iso2022")) \
        or codec == "utf-8-sig"


def part_bounds(path, size: int, codec: str, part_bytes: int = PART_BYTES) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering the file, each cut just after a line
    end at or past a multiple of ``part_bytes`` (after ``\\r\\n`` whole)."""
    if size == 0:
        return []
    if not _cuttable(codec):
        return [(0, size)]
    cuts = [0]
    with _open(path) as f:
        target = part_bytes
        while target < size:
            cut = _line_end_after(f, max(target, cuts[-1]), size)
            if cut >= size:
                break
            cuts.append(cut)
            target = cut + part_bytes
    cuts.append(size)
    return list(zip(cuts[:-1], cuts[1:]))


def _line_end_after(f, pos: int, size: int, probe: int = 1 << 16) -> int:
    """The offset just past the first line end at or after ``pos``."""
    while pos < size:
        f.seek(pos)
        block = f.read(probe + 1)  # one byte more: is a \r at the end followed by \n?
        m = re.search(rb"\n|\r", block[:probe])
        if m:
            i = m.start()
            return pos + i + (2 if block[i:i + 2] == b"\r\n" else 1)
        pos += probe
    return size


def _open(path):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise read_error(path, exc) from None


def tokenise_part(job) -> Part:
    """Read and tokenise ``job = (path, start, stop, codec, level, name)``
    (``name``: the file as messages call it)."""
    path, start, stop, codec, level, name = job
    with _open(path) as f:
        f.seek(start)
        data = f.read(stop - start)
    if len(data) != stop - start:
        raise ElmanError(f"{name}: the file changed while it was being read (it is shorter than "
                         f"{stop} bytes now); read it again when nothing writes to it")
    if level == "word" and codec in ("utf-8", "ascii") and data.isascii() \
            and not any(c in data for c in _ASCII_WS_OTHER):
        # Plain ASCII: bytes.split() splits exactly where str.split() would,
        # and skips decoding each token; only the distinct ones are decoded.
        keys, ids = _words(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if b"\r" in data else data,
                           b"\n", b" ", EOS.encode())
        keys = [k.decode("ascii") for k in keys]
    else:
        text = _decode(path, data, start, codec, name)
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        keys, ids = (_words(text, "\n", " ", EOS) if level == "word" else _chars(text))
    ids = ids.astype(np.uint16) if len(keys) <= 1 << 16 else ids  # half the bytes on the way back
    return Part(keys, np.bincount(ids, minlength=len(keys)).astype(np.int64), ids, stop)


def _decode(path, data: bytes, start: int, codec: str, name) -> str:
    if codec == "utf-8-sig" and start > 0:
        codec = "utf-8"  # the signature can only be at the start of the file
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        raise ElmanError(
            f"{name}: not valid {codec}: byte 0x{data[exc.start]:02x} at offset {offset} "
            f"(line {_line_number(path, offset)}); pass --encoding if the file uses another one") from None
    return text[1:] if start == 0 and text.startswith("\ufeff") else text


def _line_number(path, offset: int) -> int:
    """1 + the \\n bytes before ``offset`` (as ``corpus.read_text`` counts them)."""
    with _open(path) as f:
        n, done = 0, 0
        while done < offset:
            block = f.read(min(1 << 20, offset - done))
            if not block:
                break
            n, done = n + block.count(b"\n"), done + len(block)
    return n + 1


def _words(text, nl, sp, eos):
    """Word-level keys and ids of ``text`` (str or bytes, lines ended by ``nl``).

    Each line end becomes a sentinel token, a string absent from the text, so
    one C-level ``split()`` and one dict pass number every token; a sentinel
    right after another one ends a blank line and is dropped. Leading
    whitespace is stripped first, so the first sentinel kept is also the
    first one seen (its first occurrence is right)."""
    body = text.lstrip()
    if not body:
        return [], np.zeros(0, np.uint32)
    if not body.endswith(nl):
        body += nl
    sentinel = _absent(body, "\x00" if isinstance(body, str) else b"\x00")
    tokens = body.replace(nl, sp + sentinel + sp).split()
    local = defaultdict(count().__next__)  # token -> local id, numbered on first sight, in C
    ids = np.frombuffer(array("I", map(local.__getitem__, tokens)), dtype=np.uint32)
    del tokens
    s = local[sentinel]
    line_end = ids == s
    blank = line_end[1:] & line_end[:-1]
    if blank.any():
        ids = np.concatenate([ids[:1], ids[1:][~blank]])
    keys = list(local)
    keys[s] = eos
    if eos in local:  # the literal word <eos> and the line ends are one token
        ids, keys = _merge(ids, keys, s, local[eos])
    return keys, ids


def _absent(text, unit):
    """The shortest run of ``unit`` (not whitespace) that does not occur in ``text``."""
    sentinel = unit
    while sentinel in text:
        sentinel += unit
    return sentinel


def _merge(ids, keys, a, b):
    """Keys ``a`` and ``b`` are one token: keep the earlier, renumber the rest."""
    keep, gone = min(a, b), max(a, b)
    table = np.arange(len(keys), dtype=np.uint32)
    table[gone] = keep
    table[gone + 1:] -= 1
    keys = keys[:gone] + keys[gone + 1:]
    return table[ids], keys


def _chars(text: str):
    """Char-level keys and ids: each kept line's characters, then ``<eos>``
    in place of its line end."""
    lines = text.split("\n")
    ended = lines[-1] == ""
    if ended:
        lines.pop()  # the last line end does not start another line
    kept = [line for line in lines if line and not line.isspace()]
    if not kept:
        return [], np.zeros(0, np.uint32)
    body = text if ended and len(kept) == len(lines) else "\n".join(kept) + "\n"
    keys = list(dict.fromkeys(body))  # first occurrence order; "\n" is <eos>
    points = np.fromiter(map(ord, keys), dtype=np.int64, count=len(keys))
    lut = np.zeros(int(points.max()) + 1, dtype=np.uint32)
    lut[points] = np.arange(len(keys), dtype=np.uint32)
    ids = lut[np.frombuffer(body.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)]
    keys[keys.index("\n")] = EOS
    return keys, ids


# -- the parts in parallel ------------------------------------------------------------

def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def tokenise_file(path, codec: str, level: str, size: int, workers: int | None = None,
                  part_bytes: int = PART_BYTES, name=None) -> Iterator[Part]:
    """The parts of ``path`` tokenised, in file order, ``workers`` at a time
    (``name``: what messages call the file, by default its path)."""
    check_level(level)
    name = str(path) if name is None else str(name)
    jobs = [(str(path), a, b, codec, level, name) for a, b in part_bounds(path, size, codec, part_bytes)]
    workers = min(workers or default_workers(), len(jobs))
    if workers <= 1:
        yield from map(tokenise_part, jobs)
        return
    yield from _ordered_map(tokenise_part, jobs, workers)


def _ignore_sigint():
    # Ctrl-C goes to the whole process group; the parent alone handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _ordered_map(fn, jobs, workers: int):
    """``map(fn, jobs)`` in worker processes, at most 2 per worker in flight
    (so finished parts never pile up in memory), results in order."""
    # fork: a worker needs nothing but this module's functions, and unlike
    # spawn it does not import the caller's __main__ again (a script without
    # an ``if __name__ == "__main__"`` guard would run twice).
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods()
                                          else "spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_ignore_sigint) as pool:
        pending = []
        try:
            for job in jobs:
                pending.append(pool.submit(fn, job))
                if len(pending) >= 2 * workers:
                    yield pending.pop(0).result()
            while pending:
                yield pending.pop(0).result()
        except BrokenProcessPool:
            raise ElmanError(f"a tokeniser process died while reading {jobs[0][5]} (killed, or out of "
                             f"memory?); nothing was cached; run again") from None
        finally:
            for future in pending:
                future.cancel()
