"""The token-id cache's file format: one file per entry, written atomically,
checked when opened.

An entry is a 4096-byte header then its data. The header is the line
``elman-cache-1 <sha256 of the JSON>\\n``, one line of JSON, then padding;
the JSON says what the data is (``kind``, ``dtype``, ``items``) and holds
``data_sha256``, the digest of the data (``tree_digest``). A file is only
taken when its header's checksum, its size and its data's digest all match:
a truncated, torn or overwritten file is refused (and the cache rebuilds
it). The data starts at a page boundary, so it can be memory-mapped.

Writing (``Writer``): a temporary file in the same directory, data streamed
into it and digested on the way, the header written last, fsync, then an
atomic rename onto the entry's name. A reader sees the old entry, the new
one, or none; a writer that dies leaves only its temporary file, which the
next builder of that entry deletes (``cache.py``).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from elman.atomic import fsync_dir

MAGIC = b"elman-cache-1 "
HEADER = 4096
BLOCK = 8 << 20  # the digest's block: fixed, so a digest never depends on how the data was written


class Corrupt(Exception):
    """An entry that exists but cannot be trusted (says why)."""


def tree_digest(block_digests: list[bytes], length: int) -> str:
    """sha256 of the blocks' sha256 digests and the length: computable block
    by block while writing, and by several threads while verifying."""
    h = hashlib.sha256(b"".join(block_digests))
    h.update(str(length).encode())
    return h.hexdigest()


def file_digest(path, start: int = 0, stop: int | None = None, threads: int = 2) -> str:
    """``tree_digest`` of bytes [start, stop) of a file, blocks read and
    hashed by ``threads`` threads (hashlib releases the GIL)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        stop = os.fstat(fd).st_size if stop is None else stop

        def block(offset: int) -> bytes:
            data = os.pread(fd, min(BLOCK, stop - offset), offset)
            if len(data) != min(BLOCK, stop - offset):
                raise Corrupt("shorter than it was a moment ago")
            return hashlib.sha256(data).digest()

        with ThreadPoolExecutor(threads) as pool:
            digests = list(pool.map(block, range(start, stop, BLOCK)))
    finally:
        os.close(fd)
    return tree_digest(digests, stop - start)


def read_header(path) -> dict:
    """The checked header of an entry; Corrupt if it is not one."""
    with open(path, "rb") as f:
        head = f.read(HEADER)
        size = os.fstat(f.fileno()).st_size
    if len(head) < HEADER or not head.startswith(MAGIC):
        raise Corrupt("not a cache entry (no elman-cache-1 header)")
    line_end = head.find(b"\n")
    meta_end = head.find(b"\n", line_end + 1)
    meta = head[line_end + 1:meta_end]
    if meta_end < 0 or hashlib.sha256(meta).hexdigest().encode() != head[len(MAGIC):line_end]:
        raise Corrupt("its header does not match its checksum")
    info = json.loads(meta)
    want = HEADER + int(info["data_bytes"])
    if size != want:
        raise Corrupt(f"{size} bytes where its header says {want} (truncated or appended to)")
    return info


def verify(path) -> dict:
    """``read_header`` and the data's digest; Corrupt when anything disagrees."""
    info = read_header(path)
    if file_digest(path, HEADER) != info["data_sha256"]:
        raise Corrupt("its data does not match the digest in its header")
    return info


class Writer:
    """A new entry: ``write`` arrays into it, ``commit(meta)`` publishes it
    atomically under ``path``; ``discard`` (or an exception inside ``with``)
    removes every trace."""

    def __init__(self, path):
        self.path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self.tmp = Path(tmp)
        self.f = os.fdopen(fd, "wb")
        self.f.write(bytes(HEADER))  # the header goes here last
        self.length, self.pending, self.digests = 0, b"", []

    def write(self, data) -> None:
        data = memoryview(np.ascontiguousarray(data)).cast("B")
        self.f.write(data)
        self.length += len(data)
        # Digest in fixed blocks whatever the sizes written.
        buf, i = self.pending, 0
        if buf:
            i = min(BLOCK - len(buf), len(data))
            buf += bytes(data[:i])
            if len(buf) == BLOCK:
                self.digests.append(hashlib.sha256(buf).digest())
                buf = b""
        while len(data) - i >= BLOCK:
            self.digests.append(hashlib.sha256(data[i:i + BLOCK]).digest())
            i += BLOCK
        self.pending = buf + bytes(data[i:])

    def commit(self, meta: dict) -> None:
        if self.pending:
            self.digests.append(hashlib.sha256(self.pending).digest())
        meta = {**meta, "data_bytes": self.length, "data_sha256": tree_digest(self.digests, self.length)}
        body = json.dumps(meta, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()
        head = MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body + b"\n"
        if len(head) > HEADER:
            raise ValueError(f"cache header of {len(head)} bytes (at most {HEADER})")
        self.f.seek(0)
        self.f.write(head.ljust(HEADER, b" "))
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)
        self.tmp = None
        fsync_dir(self.path.parent)

    def discard(self) -> None:
        if not self.f.closed:
            self.f.close()
        if self.tmp is not None:
            try:
                self.tmp.unlink()
            except OSError:
                pass
            self.tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.discard()  # a no-op after commit
