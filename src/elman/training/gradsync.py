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
instead (``nodesync``: robust to busy cores); the sums are the same. There
the weights too are shared, and each process sums and updates only its
slice (``nodeshare``, through ``share`` and ``step``); a class softmax's U
gradient goes as the factors of its product (``nodeproduct``).
"""
from __future__ import annotations

import os
import time

import numpy as np

from elman.core.sparse import SparseGrad
from elman.fast.colgrad import ColumnProduct
from elman.fast.kernels_direct import ScatterGrad
from elman.errors import ElmanError
from elman.training import nodeproduct
from elman.training.nodeshare import NodeShare, settle
from elman.training.nodesync import NodeExchange, SparseParts

# ELMAN_SPARSE_REDUCE=gather|dense overrides the cost model (tests, measurements);
# ELMAN_EXCHANGE=mpi uses MPI's collectives on one machine too (nodesync otherwise);
# ELMAN_SLICES=off: on one machine too, every process steps its own whole copy (nodeshare otherwise).
OVERRIDE, TRANSPORT, SLICES = "ELMAN_SPARSE_REDUCE", "ELMAN_EXCHANGE", "ELMAN_SLICES"


class CostModel:
    """Seconds of the two collectives as ``alpha + beta * bytes``; ``gamma``:
    seconds a byte of one element-wise pass over memory costs (a dense
    gradient makes the packing, the sum and the optimizer pass over all of
    it, a gathered one only over its rows); ``per_id``: seconds each id of
    a gathered one adds to those passes, which go through an index (its
    parts added into the sum, the optimizer's take and put): on this
    machine's 2M direct weights an indexed pass costs 10 to 20 times a
    streaming one per element."""

    PASSES = 3                  # zero-fill or copy, sum, optimizer: about three passes a byte either way

    def __init__(self, allreduce=(0.0, 0.0), allgather=(0.0, 0.0), gamma=0.0, processes=1, per_id=0.0):
        self.allreduce, self.allgather = tuple(allreduce), tuple(allgather)
        self.gamma, self.processes = float(gamma), int(processes)
        self.per_id = float(per_id)     # 0 in a model saved without it: the choices it made then

    def state(self) -> dict:
        return {"allreduce": list(self.allreduce), "allgather": list(self.allgather), "gamma": self.gamma,
                "processes": self.processes, "per_id": self.per_id}

    def local(self, nbytes: float, ids: float = 0.0) -> float:
        """Seconds of the passes over a gradient of ``nbytes`` (``ids`` of them through an index)."""
        return self.PASSES * (self.gamma * nbytes + self.per_id * ids)

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

        gamma, per_id = local_costs(large)
        model = cls(line(allreduce(small), allreduce(large)), line(allgather(small), allgather(large)), gamma,
                    world.Get_size(), per_id)
        # Every process decides with rank 0's numbers, so all make the same choice.
        return cls.from_state(_bcast_floats(world, model))

    def gather(self, dense_bytes: dict, gathered_bytes: dict, ids: dict) -> set:
        """The names of the sparse gradients to all-gather rather than densify
        (``ids``: how many ids the processes' parts of each hold together)."""
        forced = os.environ.get(OVERRIDE, "")
        if forced in ("gather", "dense"):
            return set(dense_bytes) if forced == "gather" else set()
        def saved(k):       # seconds an all-gather of k's (ids, rows) saves over densifying it
            return (self.allreduce[1] * dense_bytes[k] + self.local(dense_bytes[k])
                    - self.allgather[1] * gathered_bytes[k] - self.local(gathered_bytes[k], ids[k]))
        pick = {k for k in dense_bytes if saved(k) > 0}
        return pick if sum(saved(k) for k in pick) > self.allgather[0] else set()    # one latency more


def local_costs(nbytes: int = 1 << 22) -> tuple[float, float]:
    """(gamma, per_id) of ``CostModel`` on this process, best of 5: a streaming
    add of float32 arrays of ``nbytes``, and an indexed add of a quarter of
    their entries less its 12 bytes (id, value) of streaming."""
    def best(fn):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    a, b = np.ones(nbytes // 4, np.float32), np.ones(nbytes // 4, np.float32)
    gamma = best(lambda: np.add(a, b, out=a)) / nbytes
    ids = np.sort(np.random.default_rng(0).choice(a.size, a.size // 4, replace=False))
    per_id = max(best(lambda: a.__setitem__(ids, a[ids] + b[:ids.size])) / ids.size - 12 * gamma, 0.0)
    return gamma, per_id


def _bcast_floats(world, model: CostModel) -> dict:
    flat = np.array([*model.allreduce, *model.allgather, model.gamma, model.processes, model.per_id], np.float64)
    world.Bcast(flat, root=0)
    return {"allreduce": flat[0:2].tolist(), "allgather": flat[2:4].tolist(), "gamma": float(flat[4]),
            "processes": int(flat[5]), "per_id": float(flat[6])}


class GradSync:
    """The per-update exchange of one MPI job (see the module's docstring)."""

    def __init__(self, world, MPI, cost: CostModel | None = None):
        self.world, self.MPI = world, MPI
        self.size = world.Get_size()
        self.cost = cost
        node = world.Split_type(MPI.COMM_TYPE_SHARED)
        if node.Get_size() == self.size and os.environ.get(TRANSPORT) != "mpi":
            self.node = NodeExchange(node, MPI)         # one machine: shared memory (nodesync)
            self.factors = nodeproduct.ProductExchange(node, MPI)
        else:
            self.node, self.factors = None, None
            node.Free()
        self.shared = None          # NodeShare, once ``share`` was called on one machine
        self.scatters, self.scatters_finite = {}, True     # this update's ScatterGrads, for ``step``
        self.buffer = np.empty(0, np.float32)
        self.updates, self.seconds, self.waited, self.reduced_bytes, self.gathered_bytes = 0, 0.0, 0.0, 0, 0
        self.offered = np.zeros(1)  # sums over updates: the dense gradients' bytes
        self.sparse_sizes = {}      # name -> sums over updates: (ids, rows) bytes a process, the dense tensor's
        self.gathered = {}          # name -> updates in which it was all-gathered
        self.factored = {}          # name -> updates in which it was summed as its factors (``nodeproduct``)

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

    def _meta(self, loss: float, flags, sparse: dict, products: dict):
        """The loss summed, the flags OR-ed, and every process's ids of each of
        ``sparse`` (size, len(sparse)) and ``nodeproduct.sizes`` of each of ``products``."""
        mine = np.array([loss, *map(float, flags), *(len(g.index) for g in sparse.values()),
                         *(x for g in products.values() for x in nodeproduct.sizes(g))], np.float64)
        every = np.empty((self.size, len(mine)), np.float64)
        if self.node is not None:
            settle(self.world.Iallgather(mine, every))      # one machine: sleep rather than spin
        else:
            self.world.Allgather(mine, every)
        total = 0.0
        for x in every[:, 0]:        # rank order, a plain float64 sum: the same on every process
            total += float(x)
        nf, ns = len(flags), len(sparse)
        counts = every[:, 1 + nf:].astype(np.int64)
        return total, tuple(bool(v) for v in every[:, 1:1 + nf].any(axis=0)), counts[:, :ns], counts[:, ns:]

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
        """The sums over the processes: ``(grads, loss, flags)``, flags OR-ed.
        With the weights shared (``share``), this process's slices of the sums,
        and a plain parameter's ``ScatterGrad`` (``deferred``) kept for the
        step, which adds each process's into the table itself."""
        t0 = time.perf_counter()
        scatters = {k: grads.pop(k) for k in [k for k, g in grads.items() if isinstance(g, ScatterGrad)]
                    if self.shared is not None}
        # A gradient left as the product that makes it (a class softmax's U,
        # ``fast.colgrad``) is summed as its factors where the weights are
        # shared and the rule steps a product (``nodeproduct``), else as its array.
        products = {k: g for k, g in grads.items() if isinstance(g, ColumnProduct) and self._factored()}
        grads = {k: g.sparse() if hasattr(g, "sparse") and not isinstance(g, SparseGrad) and k not in products
                 else g for k, g in grads.items()}
        sparse = {k: g for k, g in grads.items() if isinstance(g, SparseGrad)}
        nf = len(flags)
        loss, flags, counts, sizes = self._meta(loss, (*flags, *(not g.finite() for g in scatters.values())),
                                                sparse, products)
        self.scatters, self.scatters_finite, flags = scatters, not any(flags[nf:]), flags[:nf]
        self.waited += time.perf_counter() - t0     # mostly waiting for the slowest process
        row = {k: g.width * g.values.dtype.itemsize for k, g in sparse.items()}
        dense_bytes = {k: row[k] * g.shape[g.axis] for k, g in sparse.items()}
        gathered_bytes = {k: int(counts[:, j].sum()) * (row[k] + 8) for j, k in enumerate(sparse)}
        ids = {k: int(counts[:, j].sum()) for j, k in enumerate(sparse)}
        self._offer_products(products, sizes, dense_bytes, gathered_bytes, ids)
        self._offer({k: g for k, g in grads.items() if k not in products}, dense_bytes, gathered_bytes, ids)
        if self.node is not None:
            if products:
                self.factors.write(products, sizes)
                for k in products:
                    self.factored[k] = self.factored.get(k, 0) + 1
            rest = {k: g for k, g in grads.items() if k not in products}
            summed, dense_read, sparse_read = self.node.exchange(rest, counts, self._node_dense(sparse),
                                                                 sliced=self.shared is not None,
                                                                 also=(self.factors.win,) if products else ())
            factored, factors_read = self.factors.read(products) if products else ({}, 0)
            summed.update({k: g for k, g in factored.items() if g is not None})
            self.reduced_bytes += dense_read // self.size
            self.gathered_bytes += sparse_read + factors_read
            return self._done(t0, summed, grads, loss, flags)
        if sparse and self.cost is None:
            raise ElmanError("internal: the gradient exchange was not calibrated")
        gather = self.cost.gather(dense_bytes, gathered_bytes, ids) if sparse else set()
        summed = self._packed(grads, {k for k in sparse if k not in gather})
        if gather:
            cols = [j for j, k in enumerate(sparse) if k in gather]
            summed.update(self._gathered({k: sparse[k] for k in sparse if k in gather}, counts[:, cols]))
            for k in gather:
                self.gathered[k] = self.gathered.get(k, 0) + 1
        return self._done(t0, summed, grads, loss, flags)

    def _node_dense(self, sparse: dict) -> set:
        """The sparse gradients to sum densely through shared memory: under an
        optimizer that moves every entry (Adam), all that it does not step
        plainly, as a process updates its slice of each tensor whole."""
        if os.environ.get(OVERRIDE) == "dense":
            return set(sparse)
        opt = self.shared.opt if self.shared is not None else None
        return {k for k in sparse if k not in opt.plain} if opt is not None and opt.dense_only else set()

    def _factored(self) -> bool:
        """Whether a ``ColumnProduct`` is summed as its factors: the weights
        shared (each process steps its span) and the rule steps a product."""
        return (self.shared is not None and self.shared.opt.takes_products
                and os.environ.get(OVERRIDE) != "dense")

    def share(self, p, opt) -> None:
        """On one machine, hold ``p`` and ``opt``'s state once, in shared memory,
        each process updating its slice (``nodeshare``); between machines every
        process keeps its copy and steps it whole."""
        if self.node is not None and os.environ.get(SLICES) != "off":
            self.shared = NodeShare(self.node.node, self.MPI, p, opt)

    @property
    def deferred(self) -> bool:
        """Whether ``allreduce`` takes a plain parameter's ``ScatterGrad``."""
        return self.shared is not None

    def step(self, opt, params: dict, grads: dict) -> float:
        """``opt``'s update of ``params`` by the summed ``grads``."""
        if self.shared is None:
            return opt.step(params, grads)
        scatters, self.scatters = self.scatters, {}
        return self.shared.step(params, grads, scatters, self.scatters_finite)

    def _offer(self, grads: dict, dense_bytes: dict, gathered_bytes: dict, ids: dict) -> None:
        """Sum up what a model of other machines needs (``stats``)."""
        self.offered[0] += sum(g.nbytes for g in grads.values() if not isinstance(g, SparseGrad))
        for k in dense_bytes:
            self.sparse_sizes[k] = self.sparse_sizes.get(k, 0) + np.array([gathered_bytes[k] / self.size,
                                                                             dense_bytes[k], ids[k] / self.size, 1])

    @staticmethod
    def _offer_products(products: dict, sizes: np.ndarray, dense_bytes: dict, gathered_bytes: dict,
                        ids: dict) -> None:
        """The sizes of ``products`` as arrays (their columns: ``nodeproduct.sizes``'
        first), for ``_offer``: what another exchange would move."""
        for j, (k, g) in enumerate(products.items()):
            row = g.hw.shape[1] * g.dtype.itemsize
            ids[k] = int(sizes[:, nodeproduct.SIZES * j].sum())
            dense_bytes[k], gathered_bytes[k] = row * g.shape[-1], ids[k] * (row + 8)

    def _done(self, t0, summed, grads, loss, flags):
        self.updates += 1
        self.seconds += time.perf_counter() - t0
        return {k: summed[k] for k in grads if k in summed}, loss, flags     # a slice may hold no ids

    def stats(self) -> dict:
        """Per update, averaged since this process started: bytes this process put
        into the all-reduce, bytes it received from the all-gather, seconds
        in the exchange, of which ``waited`` in its first step, where every
        process waits for the slowest to arrive; and what a
        model of other machines needs (``bench.parallel``): the bytes of the
        dense gradients, and for each sparse one (``sparse``, averaged over
        the updates that exchanged it: a plain parameter's ``ScatterGrad`` is
        not; a ``ColumnProduct`` as its array) the bytes of one process's
        (ids, rows), its size as a dense tensor, and one process's ids; the
        totals of the first two; the share of updates that all-gathered each,
        or summed it as its factors."""
        n = max(self.updates, 1)
        sparse = {k: [float(x) for x in v[:3] / v[3]] for k, v in self.sparse_sizes.items()}
        return {"updates": self.updates, "allreduce_bytes": self.reduced_bytes / n,
                "allgather_bytes": self.gathered_bytes / n, "seconds": self.seconds / n, "waited": self.waited / n,
                "dense_bytes": float(self.offered[0] / n), "sparse": sparse,
                "sparse_bytes": sum(v[0] for v in sparse.values()),
                "sparse_dense_bytes": sum(v[1] for v in sparse.values()),
                "gathered": {k: v / n for k, v in self.gathered.items()},
                "factored": {k: v / n for k, v in self.factored.items()}}
