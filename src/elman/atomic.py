"""Atomic file writes: readers see the old file or the new one, never a part.

Temp file in the same directory, fsync it, ``os.replace`` over the target,
fsync the directory so the rename itself survives a power cut.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from elman.errors import ElmanError


def fsync_dir(path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_file_mode() -> int:
    """The mode open() would give a new file (0666 less the umask): mkstemp's
    own 0600 would make every written file private to its owner."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path, data: bytes) -> None:
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, _new_file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise ElmanError(f"{path}: cannot write it ({exc.strerror or exc})") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    fsync_dir(path.parent)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_bytes(obj) -> bytes:
    """Strict JSON (no NaN or Infinity), so any parser reads our files."""
    return (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode("utf-8")


def atomic_write_json(path, obj) -> None:
    atomic_write_bytes(path, json_bytes(obj))


@contextlib.contextmanager
def atomic_text_stream(path):
    """A text file written as it goes (``--per-token``) that appears whole or
    not at all: lines go into a temporary file beside ``path``, which
    replaces it only when the ``with`` block ends without an exception."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, _new_file_mode())
    except OSError as exc:
        raise ElmanError(f"{path}: cannot write it ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            yield f
            _finish(f, tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_dir(path.parent)


def _finish(f, tmp: str, path: Path) -> None:
    try:
        f.flush()
        os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise ElmanError(f"{path}: cannot write it ({exc.strerror or exc})") from None
