"""elman.fast.scratch reuses memory only when nothing made from it is alive."""
import numpy as np

from elman.fast import scratch


def _addr(a):
    return a.__array_interface__["data"][0]


def test_memory_is_reused_once_the_array_is_gone():
    scratch.clear()
    a = scratch.empty("t", (4, 5), np.float32)
    where = _addr(a)
    del a
    b = scratch.empty("t", (20,), np.float32)
    assert _addr(b) == where and b.shape == (20,) and b.dtype == np.float32


def test_memory_in_use_is_never_handed_out_again():
    scratch.clear()
    a = scratch.empty("t", (100,), np.float64)
    a[:] = 1.0
    view = a[10:20]                 # a view keeps the memory in use after its array is gone
    del a
    b = scratch.empty("t", (100,), np.float64)
    c = scratch.empty("t", (100,), np.float64)     # both kept buffers busy: a one-off array
    b[:] = 2.0
    c[:] = 3.0
    assert (view == 1.0).all()
    assert len({_addr(view) - 80, _addr(b), _addr(c)}) == 3


def test_a_larger_request_gets_a_larger_buffer():
    scratch.clear()
    a = scratch.empty("t", (10,), np.float32)
    del a
    b = scratch.empty("t", (1000, 10), np.float32)
    b[:] = 5.0                      # the whole of it is writable memory
    assert b.sum() == 50000.0
