"""A class softmax's dJ/dU summed over one machine's processes as its factors.

One process takes dJ/dU as the product that makes it (``fast.colgrad``):
its step forms each column from the factors hw (N,Dh) and D and updates
U's column and Adagrad's state in the same pass. Summed over processes as
arrays (``nodesync``), each process would build its product (Dh,C), C
nearly V, write it into shared memory, and sum and step its slice of
everyone's: passes over memory the size of U, more of them the fewer and
larger the classes. The factors are small (N rows of Dh, and of D each
row's class's columns), and the sum of the processes' products is a
product too, of all their rows:

    Σ_p hw_pᵀ D_p = [hw_0; hw_1; ..]ᵀ [D_0; D_1; ..]   on each class's columns

So each process writes its factors and its plan (``fast.grouped.Plan``:
which rows make which columns) side by side with the others' into one
shared-memory window, and after the exchange's one barrier (``nodesync``)
takes the columns of its span as one ``ColumnProduct`` of every process's
rows (``colgrad.summed_groups``), stepped on its span of the shared U
(``nodeshare``) by the one-process step. The spans are cut by the work
(``colgrad.column_cuts``) at the same columns on every process: each reads
the same plans. A window is written by every process before the barrier
and read after it; the next update's writes come after the step's closing
fence (``NodeShare.step``), when no process reads any more.
"""
from __future__ import annotations

import numpy as np

from elman.fast.colgrad import ColumnProduct, Factors, column_cuts, summed_groups

SIZES = 4       # numbers a process tells the others of each product: columns, rows, entries of D, groups


def _up64(n: int) -> int:
    return (n + 63) // 64 * 64


def sizes(g: ColumnProduct) -> list:
    """What the others need to lay out this process's factors, and the columns it has (the statistics')."""
    return [len(g.index), g.hw.shape[0], int(g.plan.off[-1]), g.plan.groups]


class ProductExchange:
    """The factors of the ``ColumnProduct``s of ``node``'s processes (one machine), side by side."""

    def __init__(self, node, MPI):
        self.node, self.MPI = node, MPI
        self.rank, self.size = node.Get_rank(), node.Get_size()
        self.win, self.capacity, self.buf = None, 0, np.empty(0, np.uint8)
        self.layout = {}

    def _ensure(self, need: int) -> None:
        """One window of ``need`` bytes, all of it rank 0's memory, so every
        process sees the areas of all as one array (every process asks for the
        same, so all reallocate together)."""
        if need <= self.capacity:
            return
        self.close()
        self.capacity = _up64(int(need * 1.25) + 4096)
        self.win = self.MPI.Win.Allocate_shared(self.capacity if self.rank == 0 else 0, 1, comm=self.node)
        self.win.Lock_all(self.MPI.MODE_NOCHECK)
        self.buf = np.frombuffer(self.win.Shared_query(0)[0], np.uint8)[:self.capacity]

    def write(self, products: dict, every: np.ndarray) -> None:
        """This process's factors into the window; ``every`` (size, SIZES·len(products)):
        every process's ``sizes`` of each product, in the order of ``products``."""
        self.layout, at = {}, 0
        for j, (k, g) in enumerate(products.items()):
            _, N, F, G = (every[:, SIZES * j + i].astype(np.int64) for i in range(SIZES))
            Dh, item = g.hw.shape[1], g.dtype.itemsize
            rows, ents = np.r_[0, np.cumsum(N)], np.r_[0, np.cumsum(F)]
            hw_at = at
            flat_at = hw_at + _up64(int(rows[-1]) * Dh * item)
            plans = np.r_[0, np.cumsum(4 * G + 2)]
            plan_at = flat_at + _up64(int(ents[-1]) * item)
            at = plan_at + _up64(8 * int(plans[-1]))
            self.layout[k] = (hw_at, flat_at, plan_at, rows, ents, plans, G)
        self._ensure(at)
        r = self.rank
        for k, g in products.items():
            hw, flat, plans = self._views(k, g)
            _, _, _, rows, ents, _, _ = self.layout[k]
            mine = hw[rows[r]:rows[r + 1]]
            if g.scale == 1.0:
                np.copyto(mine, g.hw)
            else:
                np.multiply(g.hw, g.dtype.type(g.scale), out=mine)
            flat[ents[r]:ents[r + 1]] = g.flat[:ents[r + 1] - ents[r]]
            p = g.plan
            plans[r][...] = np.concatenate([p.a, p.b, p.cuts, p.off])

    def _views(self, k: str, g: ColumnProduct):
        """The window's common hw (ΣN,Dh) and flat D, and each process's plan
        (a, b, cuts, off in one int64 array), of product ``k``."""
        hw_at, flat_at, plan_at, rows, ents, plans, _ = self.layout[k]
        Dh, item = g.hw.shape[1], g.dtype.itemsize
        hw = self.buf[hw_at:hw_at + int(rows[-1]) * Dh * item].view(g.dtype).reshape(-1, Dh)
        flat = self.buf[flat_at:flat_at + int(ents[-1]) * item].view(g.dtype)
        ints = self.buf[plan_at:plan_at + 8 * int(plans[-1])].view(np.int64)
        return hw, flat, [ints[plans[r]:plans[r + 1]] for r in range(self.size)]

    def read(self, products: dict) -> tuple[dict, int]:
        """After the barrier: each product summed over the processes on this
        process's span of columns (None where it has no class there), and the
        bytes of factors it read."""
        out, read = {}, 0
        for k, g in products.items():
            hw, flat, plans = self._views(k, g)
            _, _, _, rows, ents, _, G = self.layout[k]
            parts = []
            for r, ints in enumerate(plans):
                n = int(G[r])
                parts.append(Factors(int(rows[r]), int(ents[r]), ints[:n], ints[n:2 * n],
                                     ints[2 * n:3 * n + 1], ints[3 * n + 1:]))
            cuts = column_cuts(parts, g.shape[-1], self.size)
            groups = summed_groups(parts, cuts[self.rank], cuts[self.rank + 1])
            out[k] = ColumnProduct(g.shape, hw, flat, groups=groups) if len(groups.a) else None
            read += int(np.diff(groups.rcuts) @ (groups.wid + hw.shape[1])) * g.dtype.itemsize
        return out, read

    def close(self) -> None:
        if self.win is not None:
            self.win.Unlock_all()
            self.win.Free()
            self.win = None
