"""One machine's processes hold one copy of the weights and optimizer state, each updating a slice.

Were each process to apply the summed gradients (``nodesync``) to a copy
of its own, N processes would do the same optimizer step N times. Here the
weights and the optimizer's state arrays live in one MPI shared-memory
window of the machine's processes, and each process sums and updates only
its slice of each tensor: a dense tensor's row blocks (U's blocks of words,
as it is held word by word, ``shard_axis``), a sparse gradient's ids cut
at quantiles of process 0's ids (``NodeExchange._slice``). A rule is
element-wise, so a slice's numbers are those of the whole update; the
clipping's global norm is the sum of the slices' squared norms, added in
rank order by every process (``NodeShare.agree``), so all scale alike. The
direct weights' plain step takes each process's own scatter, never
exchanged (``NodeShare.step``). A barrier after the step keeps any process
from reading weights another is still writing.
"""
from __future__ import annotations

import time

import numpy as np

from elman.core.params import stacked_bias
from elman.core.sparse import SparseGrad


class Slice(SparseGrad):
    """A dense gradient's entries [lo, hi) along ``axis``: every entry of that
    slice, so a rule that moves every entry (Adam) takes it as it is, where it
    would make a ``SparseGrad`` dense and move the whole tensor."""

    def __init__(self, lo: int, values, shape, axis: int):
        n = values.shape[axis]
        super().__init__(np.arange(lo, lo + n), values, shape, axis)
        self.span = slice(lo, lo + n)


def settle(req) -> None:
    """Wait for MPI request ``req`` (a collective among one machine's processes)
    polling a moment, then sleeping between polls: MPI's own wait spins, and
    on a machine whose cores are shared with other programs a spinning
    process holds a core that the slowest process, the one all wait for,
    could take. Sleeping leaves it idle, and the scheduler moves work there."""
    t0 = time.perf_counter()
    while not req.Test():
        if time.perf_counter() - t0 > SPIN_S:
            time.sleep(NAP_S)


SPIN_S, NAP_S = 5e-5, 5e-5      # a barrier of two running processes takes microseconds; a nap, about 60


def shard(n: int, rank: int, size: int) -> tuple[int, int]:
    """[lo, hi) of ``n`` entries that process ``rank`` of ``size`` updates."""
    return n * rank // size, n * (rank + 1) // size


def shard_axis(a) -> int:
    """The axis a tensor's slices are cut along: the one memory runs slowest
    on (U's words in its word-by-word layout, else rows), so each slice is one
    stretch of memory; -1 for a column cut, as ``SparseGrad``'s axis."""
    return -1 if np.ndim(a) == 2 and a.strides[0] < a.strides[1] else 0


def _up64(n: int) -> int:
    return (n + 63) // 64 * 64


def _like(buf: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The start of byte buffer ``buf`` as an array shaped and laid out as ``a``."""
    flat = buf[:a.nbytes].view(a.dtype)
    if a.ndim == 2 and a.strides[0] < a.strides[1]:
        return flat.reshape(a.shape[::-1]).T
    return flat.reshape(a.shape)


class NodeShare:
    """The weights ``p`` and the state of optimizer ``opt``, moved into one
    shared-memory window of ``node``'s processes (all of one machine)."""

    def __init__(self, node, MPI, p, opt):
        self.node, self.MPI, self.opt = node, MPI, opt
        self.rank, self.size = node.Get_rank(), node.Get_size()
        names = [k for k, v in p.as_dict().items() if v.dtype.kind == "f"]
        W = stacked_bias(p.U, p.b2) if {"U", "b2"} <= set(names) else None
        tensors = [(k, getattr(p, k)) for k in names if W is None or k not in ("U", "b2")]
        tensors += [(None, np.asarray(W).T)] if W is not None else []        # W (V,Dh+1) itself
        tensors += [((slot, k), a) for slot, arrays in opt.state.items() for k, a in arrays.items()]
        total = sum(_up64(a.nbytes) for _, a in tensors)
        self.win = MPI.Win.Allocate_shared(total if self.rank == 0 else 0, 1, comm=node)
        self.win.Lock_all(MPI.MODE_NOCHECK)
        buf = np.frombuffer(self.win.Shared_query(0)[0], np.uint8)[:total]
        at = 0
        for key, a in tensors:
            view = _like(buf[at:], a)
            if self.rank == 0:
                view[...] = a
            at += _up64(a.nbytes)
            if key is None:                                     # W: U = W[:, :Dh]ᵀ, b2 = W[:, Dh]
                p.U, p.b2 = view[:, :-1].T, view[:, -1]
            elif isinstance(key, tuple):
                opt.state[key[0]][key[1]] = view
            else:
                setattr(p, key, view)
        self.fence()

    def fence(self) -> None:
        """Every process's writes to the window visible to all, after all arrive."""
        self.win.Sync()
        settle(self.node.Ibarrier())
        self.win.Sync()

    def agree(self, sq: float, finite: bool) -> tuple[float, bool]:
        """The slices' squared norms summed in rank order (the same bits on every
        process), and whether every slice's plain gradients are finite."""
        mine = np.array([sq, float(finite)], np.float64)
        every = np.empty((self.size, 2), np.float64)
        settle(self.node.Iallgather(mine, every))
        total = 0.0
        for x in every[:, 0]:
            total += float(x)
        return total, bool(every[:, 1].all())

    def step(self, params: dict, grads: dict, scatters: dict, finite: bool) -> float:
        """This process's slices of ``grads`` (``NodeExchange.exchange(sliced=True)``)
        applied, and every process's ``scatters`` (plain parameters' gradients
        as ``ScatterGrad``s, never exchanged; ``finite``: on every process);
        returns the gradient norm before clipping.

        A scatter's step is linear: each process adds its own into the shared
        table, a slice at a time, in N phases between which the processes
        meet (the first meeting is the clipping's, ``agree``), so no cell is
        written by two at once; slice j then takes process j's scatter
        first, then the others' in rank order, where one process adds them
        all at once (the same sum to rounding). A gradient found not finite
        raises on every process alike: before any weight moves when it is a
        scatter's, after this process's first phase otherwise."""
        if not finite:
            raise FloatingPointError("the direct weights' gradient is not finite")
        factors = {k: self.opt.plain_factor(k, params[k]) for k in scatters}

        def phase(j):
            for k, g in scatters.items():
                g.apply(params[k], factors[k], shard(params[k].size, (self.rank + j) % self.size, self.size))
        phase(0)
        norm = self.opt.step(params, grads, across=self.agree)     # raises on every process alike
        for j in range(1, self.size):
            if j > 1:
                self.fence()
            phase(j)
        self.fence()
        return norm

    def close(self) -> None:
        if self.win is not None:
            self.win.Unlock_all()
            self.win.Free()
            self.win = None
