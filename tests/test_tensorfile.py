"""The safetensors reader's views against the safetensors package's own loader."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from safetensors.numpy import load, save

from elman.errors import ElmanError
from elman.tensorfile import read_safetensors, tensor_views


def some_tensors(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"L": rng.standard_normal((7, 3)).astype(np.float32), "b": rng.standard_normal(5),
            "ids": rng.integers(-9, 9, size=(2, 3, 4)), "n": np.array(3, np.int32),
            "none": np.zeros((0, 4), np.float32), "h": rng.standard_normal(2).astype(np.float16),
            "u": rng.integers(0, 255, size=9).astype(np.uint8), "mask": rng.random(6) < 0.5}


@pytest.mark.parametrize("seed", range(3))
def test_views_equal_the_packages_loader_and_are_writable(tmp_path, seed):
    arrays = some_tensors(seed)
    data = save(arrays, metadata={"format": "x"})
    path = tmp_path / "t.safetensors"
    path.write_bytes(data)
    theirs, ours = load(data), read_safetensors(path)
    assert sorted(ours) == sorted(theirs) == sorted(arrays)
    for k, a in theirs.items():
        assert ours[k].dtype == a.dtype and ours[k].shape == a.shape and np.array_equal(ours[k], a)
        assert ours[k].flags.writeable and ours[k].flags.c_contiguous
    before = ours["b"].copy()
    ours["L"][...] += 1                       # one tensor's writes stay in its own range
    assert np.array_equal(ours["b"], before) and np.array_equal(ours["L"], theirs["L"] + 1)


def header_file(header: dict, data: bytes) -> bytearray:
    h = json.dumps(header).encode()
    return bytearray(struct.pack("<Q", len(h)) + h + data)


@pytest.mark.parametrize("header, data, reason", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12, "hold 8 bytes of data, the file 12"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, r"8 bytes for shape \[3\]"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}, b"\0" * 12, "starts at byte 8, not 4"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "starts at byte"),
    ({"a": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}, b"\0" * 2, "not one NumPy reads"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "non-negative integers"),
    ({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4, "needs dtype, shape and data_offsets"),
    ([1, 2], b"", "not a JSON object"),
])
def test_malformed_headers_are_refused_with_the_reason(header, data, reason):
    with pytest.raises(ValueError, match=reason):
        tensor_views(header_file(header, data))


def test_truncated_and_foreign_files(tmp_path):
    data = save(some_tensors(0))
    path = tmp_path / "t.safetensors"
    for bad in (data[:5], data[:-1], data[:20], b"\xff" * 8 + data[8:], data[:8] + b"{not json" + data[17:]):
        path.write_bytes(bad)
        with pytest.raises(ElmanError, match="not a valid safetensors file"):
            read_safetensors(path)
        with pytest.raises(Exception):        # the package refuses each of them too
            load(bad)
