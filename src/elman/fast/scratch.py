"""Big temporary arrays that keep their memory from one training step to the next.

The output layer's (N,V) exps and its (Dh+1,V) gradient are tens of MB
each, made and dropped every step. glibc's malloc serves blocks that large
with fresh pages from the kernel (mmap), or gives the top of its heap back
when they are freed (trim), depending on what was freed before: in a
training loop either can mean thousands of page faults a step, each page
zeroed by the kernel before NumPy overwrites it (measured: 3,200 faults and
+20% time a step at V=10k, in some runs and not others). ``empty`` hands
out memory kept from an earlier call under the same name, once no array
made from it is still alive, so a loop's steps reuse the same pages.

Whether anything still uses a buffer is read off its reference count: NumPy
points every view at the array that owns the memory (``base`` collapses to
the owner), so each live array cut from a buffer holds one reference to it.
Two buffers a name: the previous step's result may still be held while the
next step runs (``loss, grads, h = bptt(...)`` rebinds ``grads`` only after
the call).
"""
from __future__ import annotations

import math
import sys
import threading

import numpy as np

KEEP = 2                        # buffers kept per name
_lock = threading.Lock()
_pools: dict = {}               # name -> [buffer, ...]


def _idle_count() -> int:
    """The reference count of a pooled buffer that nothing else uses, as the
    check in ``empty`` sees it (measured, not assumed: it varies between
    Python versions)."""
    pool = [np.empty(1, np.uint8)]
    return sys.getrefcount(pool[0])


_IDLE = _idle_count()


def empty(name: str, shape, dtype) -> np.ndarray:
    """Like ``np.empty(shape, dtype)`` (contents undefined), in memory kept
    from an earlier call with the same ``name`` when one of its buffers is
    large enough and unused; otherwise new memory, kept for later if the
    name has fewer than ``KEEP`` buffers."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    with _lock:
        pool = _pools.setdefault(name, [])
        for i in range(len(pool)):
            if sys.getrefcount(pool[i]) == _IDLE:
                if pool[i].nbytes < nbytes:
                    pool[i] = np.empty(nbytes, np.uint8)
                return pool[i][:nbytes].view(dtype).reshape(shape)
        if len(pool) >= KEEP:
            return np.empty(shape, dtype)
        pool.append(np.empty(nbytes, np.uint8))
        return pool[-1][:nbytes].view(dtype).reshape(shape)


def clear() -> None:
    """Let go of every kept buffer (arrays still in use stay valid)."""
    with _lock:
        _pools.clear()
