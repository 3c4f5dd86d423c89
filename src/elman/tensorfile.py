"""Reading safetensors files as views of one buffer: no copy of a tensor.

A safetensors file is an 8-byte little-endian header length N, N bytes of
JSON naming each tensor's dtype, shape and byte range [begin, end) in the
data that follows, then the data. Parsing runs nothing (no pickle).

The ``safetensors`` package writes elman's files (``modelfile``) and is the
reference these views are tested against; its NumPy loader copies every
tensor out of the file's bytes into bytes of its own, and a model's arrays
must be writable, which took one more copy. On a virtual machine a fresh
page can cost far more than the copy into it: at 16M direct weights (an
80 MB file) the two copies took 0.3-0.6 s of `elman score`'s start
(2026-12-06, a 2-core Xeon VM, ``modelfile.load_params`` of the KJV
defaults' model timed alone).
Here the file is read once into one array and each tensor is a writable
NumPy view of its range, checked as the format requires: ranges in order,
without gaps or overlap, covering the data, each the size its shape and
dtype say.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from elman.errors import ElmanError

# The dtypes NumPy holds as they are (safetensors is little-endian); BF16 and F8 have no NumPy type.
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
MAX_HEADER = 100_000_000        # the format's own bound on N


def read_buffer(path: Path) -> np.ndarray:
    """The whole file in one writable uint8 array, read once. NumPy's own
    allocation, not a bytearray: NumPy asks the kernel for huge pages for
    large arrays, and the direct table's scattered reads then miss the TLB
    less (random reads of a 64 MB table: 27-29 ms against 31-50 ms from a
    bytearray, 2026-12-06, a 2-core Xeon VM); the read also faults in 2 MB
    pages, not 4 KB ones."""
    with open(path, "rb") as f:
        buf = np.empty(os.fstat(f.fileno()).st_size, np.uint8)
        view, got = memoryview(buf), 0
        while got < len(buf):
            n = f.readinto(view[got:])
            if not n:
                return buf[:got]        # shorter than it was at open: parsing says what is missing
            got += n
        return buf


def tensor_views(data) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file's bytes ``data`` as views of it;
    ValueError, with the reason, if it is not one."""
    if len(data) < 8:
        raise ValueError("shorter than the 8-byte header length")
    n = int.from_bytes(bytes(data[:8]), "little")
    if n > MAX_HEADER or 8 + n > len(data):
        raise ValueError(f"header of {n} bytes in a file of {len(data)}")
    try:
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    header.pop("__metadata__", None)
    start, size = 8 + n, len(data) - 8 - n
    entries = sorted((_entry(name, info) for name, info in header.items()), key=lambda e: e[3])
    at = 0
    for name, _, _, begin, end in entries:
        if begin != at:
            raise ValueError(f"tensor {name} starts at byte {begin}, not {at} (a gap or an overlap)")
        at = end
    if at != size:
        raise ValueError(f"the tensors hold {at} bytes of data, the file {size}")
    buf = np.frombuffer(data, np.uint8)
    views = {}
    for name, dtype, shape, begin, end in entries:
        a = buf[start + begin:start + end].view(dtype).reshape(shape)
        views[name] = a if a.flags.aligned else a.copy()     # BLAS wants aligned rows; our files are
    return views


def _entry(name: str, info) -> tuple:
    """(name, dtype, shape, begin, end) of one header entry, checked."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise ValueError(f"tensor {name}: an entry needs dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPES:
        raise ValueError(f"tensor {name}: dtype {dtype!r} is not one NumPy reads")
    ints = all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in [*shape, *offsets])
    if not (isinstance(shape, list) and isinstance(offsets, list) and len(offsets) == 2 and ints):
        raise ValueError(f"tensor {name}: shape and data_offsets must be non-negative integers")
    dtype = np.dtype(DTYPES[dtype])
    begin, end = offsets
    if end - begin != int(np.prod(shape, dtype=object)) * dtype.itemsize:
        raise ValueError(f"tensor {name}: {end - begin} bytes for shape {shape} of {info['dtype']}")
    return name, dtype, tuple(shape), begin, end


def read_safetensors(path, data=None) -> dict[str, np.ndarray]:
    """Tensors of a safetensors file (``data``: its bytes, already read);
    anything else is refused, never executed."""
    path = Path(path)
    if data is None:
        data = read_file(path)
    try:
        return tensor_views(data)
    except ValueError as exc:
        # (A safetensors file starts with its header's length, and a length
        # of 128 + 256k starts with 0x80, the byte that also starts a pickle:
        # the signature alone would refuse good files, so it is only read
        # once parsing failed.)
        if bytes(data[:1]) == b"\x80" or bytes(data[:2]) == b"PK":
            raise ElmanError(f"{path}: not a safetensors file (it looks like a pickle or a zip, "
                             "which elman never loads: they can run code)") from None
        raise ElmanError(f"{path}: not a valid safetensors file (truncated or foreign: {str(exc)[:120]})") from None


def read_file(path: Path) -> np.ndarray:
    """``read_buffer`` with every failure one ElmanError."""
    try:
        return read_buffer(path)
    except FileNotFoundError:
        raise ElmanError(f"{path}: no such file (not a complete elman model)") from None
    except IsADirectoryError:
        raise ElmanError(f"{path}: is a directory, expected a file") from None
    except OSError as exc:
        raise ElmanError(f"{path}: cannot read it ({exc.strerror or exc})") from None
