"""The gradient exchange of processes that share one machine: shared memory.

MPI's all-reduce of a large buffer between processes of one machine passes
it through shared memory in many small pieces, and each piece waits for the
other process to run. On a machine whose cores are all busy (other jobs, or
more processes than cores) each of those waits can be a scheduler time
slice: an 8 MB all-reduce between two processes measured 2.8 ms at its
fastest but 23 ms (median) and 60-130 ms (90th percentile) at a load of 8
on 2 cores.

Here each process writes its gradients once into its own region of one
MPI shared-memory window (dense tensors, then each sparse one as ids and
values), one barrier, and then every process reads all the regions and sums
them itself, in rank order: one synchronisation instead of hundreds, the
same sums on every process, and a sparse gradient costs only its rows.
The barrier before each write is the all-gather of the update's sizes
(``gradsync``): no process writes update k+1 before every process has read
update k, so one region each suffices.
"""
from __future__ import annotations

import numpy as np

from elman.core.sparse import SparseGrad
from elman.training.nodeshare import Slice, settle, shard, shard_axis


def _up8(n: int) -> int:
    return (n + 7) // 8 * 8


def _dense_bytes(g) -> int:
    """Bytes of g as a dense tensor (a ``SparseGrad`` densified)."""
    return int(np.prod(g.shape)) * g.dtype.itemsize


def _cut(a: np.ndarray, axis: int, lo: int, hi: int) -> np.ndarray:
    """Entries [lo, hi) of ``a`` along ``axis`` (0, or -1 for columns): a view."""
    return a[lo:hi] if axis == 0 else a[..., lo:hi]


def _laid_out(buf: np.ndarray, g) -> np.ndarray:
    """The start of byte buffer ``buf`` as a dense tensor shaped like ``g`` and
    laid out in memory as g is (U's gradient word by word, as U: a row-major
    copy would make the copy, the sum and the optimizer's passes transpose)."""
    a = g.values if isinstance(g, SparseGrad) else g
    flat = buf[:_dense_bytes(g)].view(g.dtype)
    if a.ndim == 2 and a.strides[0] < a.strides[1]:
        return flat.reshape(g.shape[::-1]).T
    return flat.reshape(g.shape)


def _values(buf: np.ndarray, g: SparseGrad, c: int) -> np.ndarray:
    """The start of byte buffer ``buf`` as the values of ``c`` ids of g, in the
    one layout every process writes and reads: a column gradient's (U's)
    column by column, each one stretch of memory, as U is held."""
    shape = g.shape_of(c)
    flat = buf[:int(np.prod(shape)) * g.dtype.itemsize].view(g.dtype)
    return flat.reshape(shape[::-1]).T if len(shape) == 2 and g.axis != 0 else flat.reshape(shape)


class NodeExchange:
    """Sums of the gradients of the processes of ``node`` (all on one machine)."""

    def __init__(self, node, MPI):
        self.node, self.MPI = node, MPI
        self.size, self.rank = node.Get_size(), node.Get_rank()
        self.win, self.capacity, self.regions = None, 0, []
        self.out = np.empty(0, np.uint8)        # this process's sums of the dense gradients

    def _layout(self, grads: dict, counts_r, densify) -> tuple[list, int]:
        """[(name, offset, ...)] of one process's region and its size; every
        process computes every region's layout from the shared ``counts``."""
        spans, at, j = [], 0, 0
        for k, g in grads.items():
            if isinstance(g, SparseGrad):
                c = int(counts_r[j])
                j += 1
                if k not in densify:
                    spans.append((k, at, c, g.width))
                    at += _up8(8 * c) + _up8(c * g.width * g.values.dtype.itemsize)
                    continue
            spans.append((k, at, None, None))
            at += _up8(_dense_bytes(g))
        return spans, at

    def _ensure(self, need: int) -> None:
        """A window whose regions hold ``need`` bytes (every process asks for the
        same, so all reallocate together)."""
        if need <= self.capacity:
            return
        if self.win is not None:
            self.win.Unlock_all()
            self.win.Free()
        self.capacity = _up8(int(need * 1.25) + 4096)
        self.win = self.MPI.Win.Allocate_shared(self.capacity, 1, comm=self.node)
        self.win.Lock_all(self.MPI.MODE_NOCHECK)
        self.regions = [np.frombuffer(self.win.Shared_query(r)[0], np.uint8)[:self.capacity]
                        for r in range(self.size)]

    def exchange(self, grads: dict, counts: np.ndarray, densify=frozenset(), sliced=False,
                 also=()) -> tuple[dict, int, int]:
        """``grads`` summed over the processes, the sparse ones in ``densify`` as
        dense tensors, the others as their parts (``SparseParts``); with the
        bytes of dense sums and of sparse rows this process read. ``sliced``:
        only this process's slice of each (``nodeshare``), a dense one as a
        ``SparseGrad`` of its consecutive ids, a tensor with no ids in the
        slice left out. ``also``: other windows the processes wrote into
        before, read after the same barrier (``nodeproduct``)."""
        layouts = [self._layout(grads, counts[r], densify) for r in range(self.size)]
        self._ensure(max(size for _, size in layouts))
        self._write(grads, layouts[self.rank][0])
        for win in (self.win, *also):   # our writes visible, then wait for everyone's
            win.Sync()
        settle(self.node.Ibarrier())
        for win in (self.win, *also):
            win.Sync()
        spans = [dict((k, (at, c, w)) for k, at, c, w in spans) for spans, _ in layouts]
        dense = [(k, g) for k, g in grads.items() if spans[0][k][1] is None]
        total = sum(_up8(_dense_bytes(g)) for _, g in dense)
        if self.out.nbytes < total:
            self.out = np.empty(total, np.uint8)
        out, pos, dense_read, sparse_read = {}, 0, 0, 0
        for k, g in dense:
            parts = [_laid_out(self.regions[r][spans[r][k][0]:], g) for r in range(self.size)]
            view = _laid_out(self.out[pos:], g)
            pos += _up8(_dense_bytes(g))
            if sliced:
                axis = shard_axis(view)
                lo, hi = shard(g.shape[axis], self.rank, self.size)
                if hi == lo:
                    continue
                parts, view = [_cut(p, axis, lo, hi) for p in parts], _cut(view, axis, lo, hi)
            np.add(parts[0], parts[1], out=view)
            for p in parts[2:]:
                view += p
            out[k] = Slice(lo, view, g.shape, axis) if sliced else view
            dense_read += view.nbytes * self.size
        for k, g in grads.items():
            if spans[0][k][1] is not None:
                out[k], read = self._parts(k, g, spans, sliced)
                sparse_read += read
        return {k: g for k, g in out.items() if g is not None}, dense_read, sparse_read

    def _write(self, grads: dict, spans: list) -> None:
        """This process's gradients into its region, as ``spans`` lays them out."""
        mine = self.regions[self.rank]
        for (k, at, c, width) in spans:
            g = grads[k]
            if c is None:
                view = _laid_out(mine[at:], g)
                if isinstance(g, SparseGrad):
                    view[...] = 0
                    g.put(view, g.values)
                else:
                    np.copyto(view, g)
            else:
                mine[at:at + 8 * c].view(np.int64)[:] = g.index
                start = at + _up8(8 * c)
                _values(mine[start:], g, c)[...] = g.values

    def _slice(self, k: str, g: SparseGrad, spans: list) -> tuple[int, int]:
        """[lo, hi) of the ids of sparse gradient ``k`` that this process sums and
        updates: cut at quantiles of process 0's ids, which every process reads
        alike, so each gets about as many ids (a vocabulary's frequent words
        have the small ids: halves of the id range would leave one the most)."""
        n, (at, c, _) = g.shape[g.axis], spans[0][k]
        if c < self.size:
            return shard(n, self.rank, self.size)
        ids = self.regions[0][at:at + 8 * c].view(np.int64)
        cut = [0, *(int(ids[c * r // self.size]) for r in range(1, self.size)), n]
        return cut[self.rank], cut[self.rank + 1]

    def _parts(self, k: str, g: SparseGrad, spans: list, sliced: bool):
        """The processes' (ids, values) of sparse gradient ``k`` (within this
        process's slice if ``sliced``; None if it has none), and the bytes read."""
        parts, read = [], 0
        lo, hi = self._slice(k, g, spans) if sliced else (0, g.shape[g.axis])
        for r in range(self.size):
            at, c, w = spans[r][k]
            ids = self.regions[r][at:at + 8 * c].view(np.int64)
            i0, i1 = np.searchsorted(ids, (lo, hi)) if sliced else (0, c)
            start = at + _up8(8 * c)
            values = self.regions[r][start:start + c * w * g.values.dtype.itemsize]
            values = _cut(_values(values, g, c), g.axis, i0, i1)
            parts.append((ids[i0:i1], values))
            read += values.nbytes + 8 * int(i1 - i0)
        if sliced and not any(len(ids) for ids, _ in parts):
            return None, read
        return SparseParts(parts, g, (lo, hi)), read

    def close(self) -> None:
        if self.win is not None:
            self.win.Unlock_all()
            self.win.Free()
            self.win = None


class SparseParts:
    """One sparse gradient as the processes' parts, ``[(ids, values)]`` in
    rank order (each laid out as ``like.values``), summed only when asked
    (``total``): a plain SGD step is linear, so it applies the parts in
    turn (``sparse_steps``) and the direct weights' 400k cells are never
    merged. The parts may be views of the exchange's buffers: they hold
    until the next exchange."""

    def __init__(self, parts: list, like: SparseGrad, span: tuple | None = None):
        self.parts, self.like, self._total = parts, like, None
        self.span = span        # [lo, hi): the ids lie there (one process's slice, ``nodeshare``)

    @property
    def dtype(self):
        return self.like.values.dtype

    def total(self) -> SparseGrad:
        if self._total is None:
            self._total = sum_parts(self.parts, self.like, self.span)
        return self._total

    def sparse_steps(self) -> list:
        """The parts as ``SparseGrad``s, in rank order."""
        return [SparseGrad(ids, values, self.like.shape, self.like.axis) for ids, values in self.parts]

    def sq_sum(self) -> float:
        """Σ over the parts of Σ g²: finite exactly when every part is (the
        plain parameters' check; clipping takes the norm of ``total``)."""
        return sum(g.sq_sum() for g in self.sparse_steps())


_marks: dict = {}   # ids along an axis of n -> (a False mask, a position table): kept, left all False


def sum_parts(parts: list, like: SparseGrad, span: tuple | None = None) -> SparseGrad:
    """The sum of several processes' ``(ids, values)`` of one gradient (each
    laid out as ``like.values``, sorted unique ids): the union of the ids,
    each part added in turn in the order of ``parts``, so every process that
    sums the same parts gets the same bits. The union is read off a mask
    over the axis, an O(n) scan: sorting the ids (``np.unique``) of the
    direct weights' 400k cells took 30 times as long.
    Adding into the columns of U in place is ten times faster than sorting
    rows and reducing them."""
    n = like.shape[like.axis]
    if n not in _marks:
        if len(_marks) > 8:
            _marks.clear()
        _marks[n] = (np.zeros(n, bool), np.empty(n, np.int64))
    mask, pos = _marks[n]
    lo, hi = span or (0, n)                # every id within: only that stretch of the mask is read
    for index, _ in parts:
        mask[index] = True
    ids = np.flatnonzero(mask[lo:hi]) + lo if lo else np.flatnonzero(mask[:hi])
    mask[ids] = False
    pos[ids] = np.arange(len(ids))
    shape, v = like.shape_of(len(ids)), like.values
    # In the values' own layout: U's columns are word by word (``core.params``).
    out = np.zeros(shape[::-1], v.dtype).T if v.ndim == 2 and v.strides[0] < v.strides[1] else np.zeros(shape, v.dtype)
    for index, values in parts:
        at = pos[index]
        if like.axis == 0:
            out[at] += values
        elif out.ndim == 2 and out.strides[0] < out.strides[1] and values.strides[0] < values.strides[1]:
            out.T[at] += values.T        # whole columns, each one stretch of memory
        else:
            out[..., at] += values
    return SparseGrad(ids, out, like.shape, like.axis)
