"""Summing the processes' gradients once per update (data-parallel training over MPI).

Three collectives an update, whatever the model:

1. an all-gather of a few float64 numbers per process: its loss, its flags
   (Ctrl-C, time budget) and how many ids each of its sparse gradients
   holds. Every process sums them in rank order, so all agree on the loss
   and on what to do next, to the bit;
2. one all-reduce (sum) of one buffer into which every dense gradient is
   packed (one message instead of one per tensor: on a network each costs
   a latency of its own);
3. one all-gather of the (ids, rows) of the sparse gradients (``SparseGrad``:
   the embedding's rows, sampled-softmax columns of U and b2, and any other
   the model makes sparse), which every process then sums into one
   SparseGrad itself, in rank order.

A sparse gradient goes by 3 or, densified, inside the buffer of 2, whichever
the cost model says is cheaper for the ids it holds in this update: a
window touches at most B·T of V embedding rows, so at V = 10k the ids and
rows are an eighth of the dense tensor, but at a tiny V the dense tensor is
smaller than its ids. The model is measured on the job's own processes at
the start of a run (``CostModel.measure``) and kept in the checkpoint, so a
resumed run with the same number of processes makes the same choices.

That is the exchange between machines. When every process of the job is on
one machine, 2 and 3 are one write into shared memory and one barrier
instead (``nodesync``: robust to busy cores); the sums are the same.
"""
from __future__ import annotations

import os
import time

import numpy as np

from elman.core.sparse import SparseGrad
from elman.errors import ElmanError
from elman.training.nodesync import NodeExchange, SparseParts

# ELMAN_SPARSE_REDUCE=gather|dense overrides the cost model (tests, measurements);
# ELMAN_EXCHANGE=mpi uses MPI's collectives on one machine too (nodesync otherwise).
OVERRIDE, TRANSPORT = "ELMAN_SPARSE_REDUCE", "ELMAN_EXCHANGE"


class CostModel:
    """Seconds of the two collectives as ``alpha + beta * bytes``, and
    ``gamma``: seconds a byte of one element-wise pass over memory costs (a
    dense gradient makes the optimizer and the packing pass over all of it,
    a gathered one only over its rows)."""

    PASSES = 3                  # zero-fill or copy, sum, optimizer: about three passes a byte either way

    def __init__(self, allreduce=(0.0, 0.0), allgather=(0.0, 0.0), gamma=0.0, processes=1):
        self.allreduce, self.allgather = tuple(allreduce), tuple(allgather)
        self.gamma, self.processes = float(gamma), int(processes)

    def state(self) -> dict:
        return {"allreduce": list(self.allreduce), "allgather": list(self.allgather), "gamma": self.gamma,
                "processes": self.processes}

    @classmethod
    def from_state(cls, state) -> "CostModel":
        return cls(**state)

    @classmethod
    def measure(cls, world, MPI, small: int = 1 << 12, large: int = 1 << 22) -> "CostModel":
        """Time both collectives at two sizes on ``world`` (best of 5; the
        slowest process's time) and fit a line through each pair."""
        def best(fn):
            times = []
            for _ in range(5):
                world.Barrier()
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            slowest = np.array([min(times)])
            world.Allreduce(MPI.IN_PLACE, slowest, op=MPI.MAX)
            return float(slowest[0])

        def allreduce(n):
            buf = np.zeros(n // 4, np.float32)
            return best(lambda: world.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM))

        def allgather(n):
            part = n // world.Get_size()
            send, recv = np.zeros(part, np.uint8), np.empty(part * world.Get_size(), np.uint8)
            return best(lambda: world.Allgather(send, recv))

        def line(t_small, t_large):
            beta = max(t_large - t_small, 0.0) / (large - small)
            return max(t_small - beta * small, 0.0), beta

        a, b = np.ones(large // 4, np.float32), np.ones(large // 4, np.float32)
        gamma = best(lambda: np.add(a, b, out=a)) / large
        model = cls(line(allreduce(small), allreduce(large)), line(allgather(small), allgather(large)), gamma,
                    world.Get_size())
        # Every process decides with rank 0's numbers, so all make the same choice.
        return cls.from_state(_bcast_floats(world, model))

    def gather(self, dense_bytes: dict, gathered_bytes: dict) -> set:
        """The names of the sparse gradients to all-gather rather than densify."""
        forced = os.environ.get(OVERRIDE, "")
        if forced in ("gather", "dense"):
            return set(dense_bytes) if forced == "gather" else set()
        local = self.PASSES * self.gamma
        pick = {k for k in dense_bytes
                if (self.allgather[1] + local) * gathered_bytes[k] < (self.allreduce[1] + local) * dense_bytes[k]}
        saved = sum((self.allreduce[1] + local) * dense_bytes[k] - (self.allgather[1] + local) * gathered_bytes[k]
                    for k in pick)
        return pick if saved > self.allgather[0] else set()     # a gather costs one latency more


def _bcast_floats(world, model: CostModel) -> dict:
    flat = np.array([*model.allreduce, *model.allgather, model.gamma, model.processes], np.float64)
    world.Bcast(flat, root=0)
    return {"allreduce": flat[0:2].tolist(), "allgather": flat[2:4].tolist(), "gamma": float(flat[4]),
            "processes": int(flat[5])}


class GradSync:
    """The per-update exchange of one MPI job (see the module's docstring)."""

    def __init__(self, world, MPI, cost: CostModel | None = None):
        self.world, self.MPI = world, MPI
        self.size = world.Get_size()
        self.cost = cost
        node = world.Split_type(MPI.COMM_TYPE_SHARED)
        if node.Get_size() == self.size and os.environ.get(TRANSPORT) != "mpi":
            self.node = NodeExchange(node, MPI)         # one machine: shared memory (nodesync)
        else:
            self.node = None
            node.Free()
        self.buffer = np.empty(0, np.float32)
        self.updates, self.seconds, self.waited, self.reduced_bytes, self.gathered_bytes = 0, 0.0, 0.0, 0, 0
        self.offered = np.zeros(3)  # sums over updates: dense-only bytes, sparse (ids, rows) a process, their dense size
        self.gathered = {}          # name -> updates in which it was all-gathered

    def calibrate(self, state=None) -> None:
        """Use the saved cost model when it was measured on as many processes, else
        measure (on one machine there is no choice to make: shared memory)."""
        if self.node is not None:
            return
        if state and state.get("processes") == self.size and "allreduce" in state:
            self.cost = CostModel.from_state({k: v for k, v in state.items() if k != "exchange"})
        else:
            self.cost = CostModel.measure(self.world, self.MPI)

    def state(self) -> dict:
        """What the checkpoint keeps: the exchange used, and its cost model."""
        if self.node is not None:
            return {"exchange": "shared memory", "processes": self.size}
        return {"exchange": "mpi", **(self.cost.state() if self.cost else {"processes": self.size})}

    def _meta(self, loss: float, flags, sparse: dict):
        mine = np.array([loss, *map(float, flags), *(len(g.index) for g in sparse.values())], np.float64)
        every = np.empty((self.size, len(mine)), np.float64)
        self.world.Allgather(mine, every)
        total = 0.0
        for x in every[:, 0]:        # rank order, a plain float64 sum: the same on every process
            total += float(x)
        nf = len(flags)
        return total, tuple(bool(v) for v in every[:, 1:1 + nf].any(axis=0)), every[:, 1 + nf:].astype(np.int64)

    def _packed(self, grads: dict, densify: dict) -> dict:
        """Every dense gradient (and the sparse ones in ``densify``) copied into
        one buffer, all-reduced; returns name -> view of the summed buffer."""
        items = [(k, g) for k, g in grads.items() if not isinstance(g, SparseGrad) or k in densify]
        if not items:
            return {}
        dtype = items[0][1].dtype
        sizes = [int(np.prod(g.shape)) for _, g in items]
        if self.buffer.size < sum(sizes) or self.buffer.dtype != dtype:
            self.buffer = np.empty(sum(sizes), dtype)
        out, at = {}, 0
        for (k, g), n in zip(items, sizes):
            view = self.buffer[at:at + n].reshape(g.shape)
            if isinstance(g, SparseGrad):
                view[...] = 0
                g.put(view, g.values.astype(dtype, copy=False))
            else:
                np.copyto(view, g)
            out[k], at = view, at + n
        self.world.Allreduce(self.MPI.IN_PLACE, self.buffer[:at], op=self.MPI.SUM)
        self.reduced_bytes += at * dtype.itemsize
        return out

    def _gathered(self, sparse: dict, counts: np.ndarray) -> dict:
        """All-gather the (ids, values) of ``sparse`` in one message; sum them."""
        names = list(sparse)
        mine = b"".join(np.asarray(sparse[k].index, np.int64).tobytes()
                        + np.ascontiguousarray(sparse[k].values).tobytes() for k in names)
        widths = [sparse[k].width * sparse[k].values.dtype.itemsize + 8 for k in names]
        per_rank = (counts * np.array(widths, np.int64)).sum(axis=1)
        recv = np.empty(int(per_rank.sum()), np.uint8)
        displs = np.r_[0, np.cumsum(per_rank)[:-1]]
        self.world.Allgatherv(np.frombuffer(mine, np.uint8), [recv, (per_rank, displs), self.MPI.BYTE])
        self.gathered_bytes += recv.nbytes
        parts, at = {k: [] for k in names}, 0
        for r in range(self.size):
            for j, k in enumerate(names):
                g, c = sparse[k], int(counts[r, j])
                ids = recv[at:at + 8 * c].view(np.int64)
                at += 8 * c
                n = c * g.width * g.values.dtype.itemsize
                parts[k].append((ids, recv[at:at + n].view(g.values.dtype).reshape(g.shape_of(c))))
                at += n
        return {k: SparseParts(parts[k], sparse[k]) for k in names}

    def allreduce(self, grads: dict, loss: float, flags=()):
        """The sums over the processes: ``(grads, loss, flags)``, flags OR-ed."""
        t0 = time.perf_counter()
        sparse = {k: g for k, g in grads.items() if isinstance(g, SparseGrad)}
        loss, flags, counts = self._meta(loss, flags, sparse)
        self.waited += time.perf_counter() - t0     # mostly waiting for the slowest process
        if self.node is not None:
            summed, dense_read, sparse_read = self.node.exchange(grads, counts)
            self.reduced_bytes += dense_read // self.size
            self.gathered_bytes += sparse_read
            self.offered += (dense_read // self.size, sparse_read / self.size,
                             sum(g.width * g.values.dtype.itemsize * g.shape[g.axis] for g in sparse.values()))
            return self._done(t0, summed, grads, loss, flags)
        if sparse and self.cost is None:
            raise ElmanError("internal: the gradient exchange was not calibrated")
        row = {k: g.width * g.values.dtype.itemsize for k, g in sparse.items()}
        dense_bytes = {k: row[k] * g.shape[g.axis] for k, g in sparse.items()}
        gathered_bytes = {k: int(counts[:, j].sum()) * (row[k] + 8) for j, k in enumerate(sparse)}
        gather = self.cost.gather(dense_bytes, gathered_bytes) if sparse else set()
        self.offered += (sum(g.nbytes for g in grads.values() if not isinstance(g, SparseGrad)),
                         sum(gathered_bytes.values()) / self.size, sum(dense_bytes.values()))
        summed = self._packed(grads, {k for k in sparse if k not in gather})
        if gather:
            cols = [j for j, k in enumerate(sparse) if k in gather]
            summed.update(self._gathered({k: sparse[k] for k in sparse if k in gather}, counts[:, cols]))
            for k in gather:
                self.gathered[k] = self.gathered.get(k, 0) + 1
        return self._done(t0, summed, grads, loss, flags)

    def _done(self, t0, summed, grads, loss, flags):
        self.updates += 1
        self.seconds += time.perf_counter() - t0
        return {k: summed[k] for k in grads}, loss, flags

    def stats(self) -> dict:
        """Per update, averaged over this session: bytes this process put
        into the all-reduce, bytes it received from the all-gather, seconds
        in the exchange, of which ``waited`` in its first step, where every
        process waits for the slowest to arrive; and what a
        model of other machines needs (``bench.parallel``): the bytes of the
        dense gradients, the (ids, rows) of the sparse ones of one process,
        and the sparse ones' size as dense tensors."""
        n = max(self.updates, 1)
        dense, sparse, sparse_dense = self.offered / n
        return {"updates": self.updates, "allreduce_bytes": self.reduced_bytes / n,
                "allgather_bytes": self.gathered_bytes / n, "seconds": self.seconds / n, "waited": self.waited / n,
                "dense_bytes": dense, "sparse_bytes": sparse, "sparse_dense_bytes": sparse_dense,
                "gathered": {k: v / n for k, v in self.gathered.items()}}
