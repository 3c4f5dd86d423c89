"""The token-id cache directory: what a corpus file is to it (``Source``:
its content digest and the settings that decide its ids), the ids a reader
gets (``TokenIds``, memory-mapped), the entries, their locks, listing and
clearing. ``ids.corpus_ids`` reads and builds through it.

Entries are keyed by what decides the ids: the file's content (never its
name or time stamps), ``--level``, the encoding, the tokeniser's version,
and the vocabulary. Per source file there are two:

    <source key>.counts             its distinct tokens (first occurrence order)
                                    and their counts: the vocabulary for any
                                    --max-vocab / --min-count without a pass
    <source key>-<vocab key>.ids    its ids under one vocabulary, uint16 when
                                    V <= 65,536, else uint32

Both are ``cachefile`` entries (atomic, checked when opened, rebuilt when
missing or corrupt). A builder holds an OS lock on ``.<source key>.lock``
(the kernel drops it if the builder dies), so processes that need the same
entry at once build it once: the others wait, then read it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import re
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elman.data import cachefile
from elman.data.cachefile import Corrupt, read_header
from elman.data.corpus import check_level, read_error
from elman.data.tokenise import TOKENISER_VERSION, codec_name
from elman.data.vocab import Vocab
from elman.errors import ElmanError


def cache_home() -> Path:
    """$XDG_CACHE_HOME/elman, else ~/.cache/elman: where elman keeps what it can rebuild."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "elman"


def default_dir() -> Path:
    return cache_home() / "ids"


def id_dtype(V: int):
    return np.uint16 if V <= 1 << 16 else np.uint32


# -- a corpus file as the cache sees it ---------------------------------------------------

@dataclass
class Source:
    """A corpus file: ``path`` what is read, ``name`` what messages call it."""
    path: Path
    name: str
    level: str
    codec: str
    size: int
    sig: tuple        # what os.stat says of it: (device, inode, size, mtime, ctime)
    digest: str

    @classmethod
    def open(cls, path, level: str, encoding: str, name=None) -> "Source":
        path = Path(path)
        name = str(path) if name is None else str(name)
        check_level(level)
        codec = codec_name(encoding, name)
        sig = _stat(path, name)
        if sig[2] == 0:
            raise ElmanError(f"{name}: empty or whitespace-only file, no text to read")
        try:
            digest = cachefile.file_digest(path)
        except OSError as exc:
            raise read_error(name, exc) from None
        except Corrupt:
            raise _changed(name) from None
        src = cls(path, name, level, codec, sig[2], sig, digest)
        src.check_unchanged()
        return src

    @property
    def key(self) -> str:
        facts = {"content": self.digest, "level": self.level, "encoding": self.codec,
                 "tokeniser": TOKENISER_VERSION}
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]

    def check_unchanged(self) -> None:
        if _stat(self.path, self.name) != self.sig:
            raise _changed(self.name)

    def describe(self) -> dict:
        name = str(Path(self.name).resolve()) if Path(self.name) == self.path else self.name
        return {"path": name[-1500:], "bytes": self.size, "level": self.level,
                "encoding": self.codec, "tokeniser": TOKENISER_VERSION, "content_sha256": self.digest}


def _stat(path: Path, name: str) -> tuple:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise read_error(name, exc) from None
    if stat.S_ISDIR(st.st_mode):
        raise ElmanError(f"{name}: is a directory, expected a text file")
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _changed(path) -> ElmanError:
    return ElmanError(f"{path}: the file changed while it was being read; run again once nothing writes to it")


def vocab_key(vocab: Vocab) -> str:
    return hashlib.sha256(vocab.to_text().encode("utf-8", "surrogatepass")).hexdigest()[:16]


# -- the ids a caller gets -------------------------------------------------------------------

class TokenIds:
    """A file's ids: ``ids`` a flat uint16/uint32 array, memory-mapped from
    the cache (``where`` its path) or in memory (``where`` "memory").

    Pages of the map stay resident once read; ``release`` hands back those
    a reader is done with (madvise DONTNEED), which is how training and
    evaluation keep their memory flat in the corpus size."""

    def __init__(self, ids: np.ndarray, where: str, mm: mmap.mmap | None = None, offset: int = 0):
        self.ids, self.where, self._mm, self._offset = ids, where, mm, offset

    def __len__(self) -> int:
        return len(self.ids)

    # It reads like its array (slices, iteration, np.asarray).
    def __getitem__(self, index):
        return self.ids[index]

    def __iter__(self):
        return iter(self.ids)

    def __array__(self, dtype=None, copy=None):
        return self.ids if dtype is None else self.ids.astype(dtype)

    @classmethod
    def mapped(cls, path: Path, info: dict) -> "TokenIds":
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        ids = np.frombuffer(mm, dtype=np.dtype(info["dtype"]), count=int(info["items"]), offset=cachefile.HEADER)
        return cls(ids, str(path), mm, cachefile.HEADER)

    def release(self, start: int, stop: int) -> None:
        """Drop the resident pages wholly inside ids [start, stop)."""
        if self._mm is None or stop <= start or not hasattr(mmap, "MADV_DONTNEED"):
            return
        size, page = self.ids.itemsize, mmap.PAGESIZE
        a = -(-(self._offset + start * size) // page) * page
        b = (self._offset + stop * size) // page * page
        if b > a:
            self._mm.madvise(mmap.MADV_DONTNEED, a, b - a)


# -- the cache directory -----------------------------------------------------------------------

class Store:
    """The cache directory: its entries, its locks, and whether it can take new ones."""

    def __init__(self, root: Path, explicit: bool, problem: str | None, say):
        self.root, self.explicit, self.problem, self.say = root, explicit, problem, say

    @classmethod
    def open(cls, cache_dir, say) -> "Store":
        root = Path(cache_dir) if cache_dir is not None else default_dir()
        problem = None
        try:
            root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            problem = "it is not a directory"
        except OSError as exc:
            problem = f"cannot create it ({exc.strerror or exc})"
        if problem is None and not os.access(root, os.W_OK | os.X_OK):
            problem = "it is not writable"
        if problem and cache_dir is not None and not root.is_dir():
            raise ElmanError(f"--cache-dir {root}: {problem}")
        return cls(root, cache_dir is not None, problem, say)

    def _entry(self, name: str) -> tuple[Path, dict] | None:
        path = self.root / name
        try:
            return path, cachefile.verify(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, Corrupt, ValueError, KeyError, TypeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else str(exc) or type(exc).__name__
            self.say(f"elman: cache entry {path} is unusable ({why}); building it again")
            return None

    def counts(self, src: Source) -> tuple[list, np.ndarray] | None:
        found = self._entry(f"{src.key}.counts")
        if found is None:
            return None
        path, info = found
        data = path.read_bytes()[cachefile.HEADER:]
        cut = int(info["tokens_bytes"])
        n = int(info["items"])
        tokens = data[:cut].decode("utf-8", "surrogatepass").split("\n")  # then the padding's empty lines
        counts = np.frombuffer(data, dtype=np.int64, offset=cut)
        tokens, padding = tokens[:n], tokens[n:]
        if len(tokens) != n or len(counts) != n or any(padding):
            self.say(f"elman: cache entry {path} is unusable (its parts disagree); building it again")
            return None
        return tokens, counts

    def ids(self, src: Source, vocab: Vocab) -> TokenIds | None:
        found = self._entry(f"{src.key}-{vocab_key(vocab)}.ids")
        if found is None or found[1].get("vocab_size") != len(vocab):
            return None
        return TokenIds.mapped(*found)

    @contextmanager
    def lock(self, src: Source):
        """Hold ``.<key>.lock`` while building; take away what dead builders left."""
        if self.problem:
            yield
            return
        waiting = f"elman: waiting for another process that builds the token ids of {src.name}"
        with source_lock(self.root, src.key, wait=lambda: self.say(waiting)):
            for stale in self.root.glob(f".{src.key}*.tmp"):  # their builders are gone: we hold the lock
                stale.unlink(missing_ok=True)
            yield

    def usable(self, src: Source) -> bool:
        """Whether new entries can be written; if not, say what happens instead."""
        if self.problem is None:
            return True
        if self.explicit:
            raise ElmanError(f"--cache-dir {self.root}: {self.problem}; cannot cache the token ids of {src.name}")
        self.say(f"elman: the token-id cache {self.root} cannot be used ({self.problem}); reading "
                 f"{src.name} into memory instead (--cache-dir DIR chooses another)")
        return False

    def failed(self, exc: OSError) -> ElmanError:
        return ElmanError(f"cannot write the token-id cache in {self.root} ({exc.strerror or exc}); no partial "
                          f"entry was left; free some space or choose another directory with --cache-dir DIR")


@contextmanager
def source_lock(root: Path, key: str, wait=None):
    """Hold the OS lock ``.<key>.lock`` of one source's entries while the
    block runs; yields whether it is held. Held by another process: with
    ``wait`` (called first, to say so) wait for it, else yield False at once."""
    with open(root / f".{key}.lock", "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if wait is None:
                yield False
                return
            wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        yield True


# -- listing and clearing ----------------------------------------------------------------------

_ENTRY = re.compile(r"^([0-9a-f]{32})(?:-[0-9a-f]{16}\.ids|\.counts)$")
_LEFTOVER = re.compile(r"^\.([0-9a-f]{32})(?:\.lock|.*\.tmp)$")


def list_entries(root=None) -> list[dict]:
    """Each entry of the cache: its header (``source``, ``kind``, ``items``
    ...) with ``file`` and ``bytes``, or ``problem`` for one that is not sound.
    Only the header is checked here (fast); opening an entry checks its data."""
    root = Path(root) if root is not None else default_dir()
    found = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if not _ENTRY.match(path.name):
            continue
        try:
            row = read_header(path)
        except (OSError, Corrupt, ValueError) as exc:
            row = {"problem": exc.strerror if isinstance(exc, OSError) else str(exc)}
        found.append({**row, "file": str(path), "bytes": path.stat().st_size})
    return found


def clear(root=None) -> tuple[int, int, list[str]]:
    """Remove every entry and leftover of the cache that no running build
    holds; ``(files removed, bytes freed, sources skipped as in use)``.
    Files elman did not name are never touched."""
    root = Path(root) if root is not None else default_dir()
    groups: dict[str, list[Path]] = {}
    for path in root.iterdir() if root.is_dir() else []:
        m = _ENTRY.match(path.name) or _LEFTOVER.match(path.name)
        if m:
            groups.setdefault(m.group(1), []).append(path)
    removed, freed, busy = 0, 0, []
    for key, paths in sorted(groups.items()):
        with source_lock(root, key) as held:
            if not held:
                busy.append(key)
                continue
            for path in paths:
                try:
                    size = path.stat().st_size
                    path.unlink()
                except FileNotFoundError:
                    continue
                removed, freed = removed + (not path.name.endswith(".lock")), freed + size
            (root / f".{key}.lock").unlink(missing_ok=True)
    return removed, freed, busy
