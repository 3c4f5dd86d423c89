"""A corpus file's token ids, the one way training, validation, ``eval`` and
resume read them: from the token-id cache (``cache``) when it holds them,
else tokenised on every core (``tokenise``) and cached.

With no vocabulary yet (a new training run), one pass counts the file and
numbers it at once: each part's tokens get provisional ids, their order of
first occurrence in the file, kept in a scratch file; once the counts give
the vocabulary, one table maps provisional ids to final ones. With a
vocabulary (validation, test, ``eval``, resume), each part is numbered
directly. Either way only the parts in flight and the distinct tokens are
in memory, never the corpus.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from elman import progress
from elman.data import cachefile
from elman.data import stream
from elman.data.cache import Source, Store, TokenIds, id_dtype, vocab_key
from elman.data.tokenise import PART_BYTES, tokenise_file
from elman.data.vocab import Vocab
from elman.errors import ElmanError


def corpus_ids(path, level: str = "word", encoding: str = "utf-8", vocab: Vocab | None = None,
               max_vocab: int | None = None, min_count: int = 1, cache_dir=None, say=None,
               workers: int | None = None, part_bytes: int = PART_BYTES, name=None) -> tuple[Vocab, TokenIds]:
    """``(vocab, ids)`` of a corpus file: with ``vocab`` given, the file read
    under it; without, the vocabulary counted from this file (``max_vocab``,
    ``min_count``, the rules of ``Vocab.from_counts``) and the file read
    under that. ``cache_dir`` defaults to ``cache.default_dir()``; ``say``
    gets one line saying where the ids came from or went.

    Standard input or a pipe (``/dev/stdin``) is first copied to a temporary
    file (``stream.spool``), since it can be read only once."""
    say = (lambda message: None) if say is None else say
    if vocab is None:  # bad options fail before any work
        Vocab.from_counts([], [], max_vocab, min_count)
    if stream.is_stream(path):
        copy, cleanup = stream.spool(path)
        try:
            return corpus_ids(copy, level, encoding, vocab, max_vocab, min_count, cache_dir, say, workers,
                              part_bytes, name="standard input" if str(path) == stream.STDIN else path)
        finally:
            cleanup()
    src = Source.open(path, level, encoding, name)
    store = Store.open(cache_dir, say)
    build = _Build(src, store, workers, part_bytes, say)
    if vocab is None:
        counts = store.counts(src)
        if counts is None:
            with store.lock(src):
                counts = store.counts(src)
                if counts is None:
                    return build.counts_and_ids(max_vocab, min_count)
        vocab = Vocab.from_counts(*counts, max_vocab, min_count)
    ids = store.ids(src, vocab)
    if ids is None:
        with store.lock(src):
            ids = store.ids(src, vocab) or build.ids(vocab)
    else:
        say(f"elman: token ids of {src.name}: {len(ids):,} from the cache, {ids.where}")
    return vocab, ids


class _Build:
    """One pass over a source file, in parts on every core, into cache
    entries (or into memory when the store cannot take them)."""

    def __init__(self, src: Source, store: Store, workers, part_bytes: int, say):
        self.src, self.store, self.workers, self.part_bytes, self.say = src, store, workers, part_bytes, say
        self.started = time.monotonic()

    def parts(self):
        src = self.src
        with progress.job(f"tokenising {src.name}", progress.BYTES, src.size, note="nothing cached",
                          rates=True) as job:
            for part in tokenise_file(src.path, src.codec, src.level, src.size, self.workers, self.part_bytes,
                                      src.name):
                yield part
                job.update(part.stop - job.done)
                job.count(tokens=len(part))

    def ids(self, vocab: Vocab) -> TokenIds:
        """The file's ids under a known vocabulary."""
        dtype = id_dtype(len(vocab))
        return self._ids(vocab, (_table(vocab, part.keys, dtype)[part.ids] for part in self.parts()),
                         self.store.usable(self.src))

    def counts_and_ids(self, max_vocab, min_count) -> tuple[Vocab, TokenIds]:
        """The vocabulary counted and the ids numbered in one pass."""
        use = self.store.usable(self.src)
        index, counts = {}, np.zeros(1 << 12, dtype=np.int64)
        try:
            scratch = _Scratch(self.store.root if use else None, self.src.key)
        except OSError as exc:
            raise self.store.failed(exc) from None
        with scratch:
            try:
                for part in self.parts():
                    first = np.fromiter((index.setdefault(k, len(index)) for k in part.keys), np.int64,
                                        len(part.keys))
                    if len(index) > len(counts):
                        counts = np.concatenate([counts, np.zeros(max(len(index), len(counts)), np.int64)])
                    counts[first] += part.counts  # a part's keys are distinct
                    scratch.write(first.astype(np.uint32)[part.ids])
            except OSError as exc:
                raise self.store.failed(exc) from None
            tokens, counts = list(index), counts[:len(index)]
            self._check(len(scratch))
            if use:
                self._counts(tokens, counts)
            vocab = Vocab.from_counts(tokens, counts, max_vocab, min_count)
            table = _table(vocab, tokens, id_dtype(len(vocab)))
            return vocab, self._ids(vocab, (table[w] for w in scratch.windows()), use)

    def _check(self, n: int) -> None:
        """Refuse a changed or empty file before anything is kept."""
        self.src.check_unchanged()
        if n == 0:
            raise ElmanError(f"{self.src.name}: empty or whitespace-only file, no text to read")

    def _counts(self, tokens: list, counts: np.ndarray) -> None:
        text = ("\n".join(tokens) + "\n").encode("utf-8", "surrogatepass")
        text += b"\n" * (-len(text) % 8)  # the counts after it stay aligned
        try:
            with cachefile.Writer(self.store.root / f"{self.src.key}.counts") as w:
                w.write(np.frombuffer(text, np.uint8))
                w.write(counts)
                w.commit({"kind": "counts", "items": len(tokens), "tokens_bytes": len(text),
                          "source": self.src.describe(), "created": _now()})
        except OSError as exc:
            raise self.store.failed(exc) from None

    def _ids(self, vocab: Vocab, chunks, use: bool) -> TokenIds:
        dtype = np.dtype(id_dtype(len(vocab)))
        if not use:
            ids = np.concatenate([np.zeros(0, dtype), *chunks])
            self._check(len(ids))
            return self._said(TokenIds(ids, "memory"), "kept in memory")
        path = self.store.root / f"{self.src.key}-{vocab_key(vocab)}.ids"
        try:
            with cachefile.Writer(path) as w:
                for chunk in chunks:
                    w.write(chunk)
                n = w.length // dtype.itemsize
                self._check(n)
                w.commit({"kind": "ids", "items": n, "dtype": dtype.name, "vocab_size": len(vocab),
                          "vocab_sha256": vocab_key(vocab), "source": self.src.describe(), "created": _now()})
        except OSError as exc:
            raise self.store.failed(exc) from None
        return self._said(TokenIds.mapped(path, cachefile.read_header(path)), f"cached in {path}")

    def _said(self, ids: TokenIds, where: str) -> TokenIds:
        dt = max(time.monotonic() - self.started, 1e-9)
        self.say(f"elman: token ids of {self.src.name}: {len(ids):,} tokenised in {dt:.1f} s "
                 f"({len(ids) / dt / 1e6:.1f}M tokens/s), {where}")
        return ids


def _table(vocab: Vocab, keys: list, dtype) -> np.ndarray:
    """The final id of each key (``<unk>`` for those outside the vocabulary)."""
    get, unk = vocab.stoi.get, vocab.unk_id
    return np.fromiter((get(k, unk) for k in keys), dtype=dtype, count=len(keys))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class _Scratch:
    """Provisional ids between the counting and the numbering: a temporary
    file in the cache directory (gone whatever happens), or a list in memory
    when there is no cache directory."""

    WINDOW = 1 << 22  # ids read back at a time (16 MB)

    def __init__(self, root: Path | None, key: str):
        self.chunks, self.n = [], 0
        self.f = None if root is None else tempfile.NamedTemporaryFile(dir=root, prefix=f".{key}.scratch.",
                                                                       suffix=".tmp")

    def __len__(self) -> int:
        return self.n

    def write(self, ids: np.ndarray) -> None:
        self.n += len(ids)
        if self.f is None:
            self.chunks.append(ids)
        else:
            self.f.write(memoryview(np.ascontiguousarray(ids, dtype=np.uint32)).cast("B"))

    def windows(self):
        if self.f is None:
            yield from self.chunks
            return
        self.f.flush()
        self.f.seek(0)
        while len(w := np.fromfile(self.f.file, dtype=np.uint32, count=self.WINDOW)):
            yield w

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.f is not None:
            self.f.close()  # a NamedTemporaryFile removes itself
