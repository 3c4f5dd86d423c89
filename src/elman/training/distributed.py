"""Training on N processes (MPI), or on one: the small interface ``train`` talks to.

``connect()`` returns ``Local`` for an ordinary run and ``MPIComm`` for one
started by an MPI launcher (``mpiexec -n N elman train ...``, ``srun``), so
the loop calls ``comm.allreduce_grads(...)``, ``comm.on_writer(...)`` and so
on without asking which. mpi4py is imported only under a launcher:
``import elman`` and a plain ``elman train`` never need it.

Synchronous data parallelism: process r of N takes streams r·B/N ..
(r+1)·B/N - 1 of the run's B (``part``), computes the gradients of its
positions (each already divided by the global B·T), and the sum over the
processes (``gradsync``) is the one-process gradient up to the order of the
float additions. Between machines every process then applies the same
update to its own copy of the weights; the processes of one machine hold
one copy in shared memory, each updating its slice (``nodeshare``). Rank 0 is the writer: it alone holds the run
directory's lock and writes checkpoints, metrics and progress.

A failure every process meets at the same point (bad input, divergence,
Ctrl-C) is *agreed*: each process raises it, rank 0 alone prints it, all
exit with the same status. A failure on one process only (a disk error
while rank 0 writes) cannot wait for the others, who may be inside a
collective: ``guard`` prints it in one line and aborts the whole job.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import zlib

import numpy as np

from elman import progress
from elman.errors import ElmanError
from elman.fast import threads
from elman.training.gradsync import GradSync


def _here() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


def agreed(exc: BaseException, silent: bool) -> BaseException:
    """Mark ``exc`` as raised by every process alike (``silent``: not the one that prints it)."""
    exc.agreed, exc.silent = True, silent
    return exc


class Local:
    """One process: every collective is the identity."""

    rank, size, writer = 0, 1, True

    def __init__(self):
        self.where = [_here()]

    def part(self, B: int) -> slice:
        return slice(0, B)

    def agree(self, fn):
        return fn()

    writer_first = on_writer = agree

    def allreduce_grads(self, grads: dict, loss: float, flags=()):
        return grads, loss, tuple(bool(f) for f in flags)

    def gather_streams(self, h: np.ndarray) -> np.ndarray:
        return h

    def anyone(self, flag: bool) -> bool:
        return bool(flag)

    def lead(self, x: float) -> float:
        return x

    def check_same(self, options: dict) -> None:
        pass

    def check_params(self, params: dict, when: str) -> None:
        pass

    def calibrate(self, state=None) -> None:
        pass

    def cost_state(self):
        return None

    deferred = True     # a plain parameter's gradient may come as a ScatterGrad (``bptt``)

    def share(self, p, opt) -> None:
        pass

    def step(self, opt, params: dict, grads: dict, later=()) -> float:
        return opt.step(params, grads, later=later)

    def stats(self):
        return None

    def fail(self, message: str) -> ElmanError:
        return ElmanError(message)

    def mark(self, exc: BaseException) -> BaseException:
        return exc

    def guard(self):
        return contextlib.nullcontext()


def _launched():
    """(rank, size) from the environment an MPI launcher sets, or None.
    MPICH's Hydra (and srun --mpi=pmi2) set PMI_*, Open MPI OMPI_COMM_WORLD_*."""
    env = os.environ
    for rank, size in (("PMI_RANK", "PMI_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE")):
        if size in env:
            try:
                return int(env.get(rank, "0")), int(env[size])
            except ValueError:
                return None
    return None


LAUNCHERS = ("mpiexec", "mpiexec.hydra", "mpirun", "orterun", "prterun", "srun")


def launcher_on_terminal() -> bool:
    """Whether the MPI launcher that started this process writes its stderr to
    a terminal. A rank's own stderr is a pipe to the launcher (through a
    proxy), so a progress bar asks the launcher's instead (Linux's /proc)."""
    pid = os.getpid()
    for _ in range(4):                          # rank <- proxy <- launcher, and a wrapper or two
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/comm") as f:
                name = f.read().strip()
            if name in LAUNCHERS:
                return os.readlink(f"/proc/{pid}/fd/2").startswith(("/dev/pts/", "/dev/tty"))
        except (OSError, ValueError, IndexError):
            return False
    return False


def connect():
    """``Local()``, or under an MPI launcher with N > 1 an ``MPIComm`` whose
    processes each use their share of the machine's cores."""
    launched = _launched()
    if launched is None or launched[1] <= 1:
        return Local()
    rank, size = launched
    try:
        import mpi4py
        mpi4py.rc.thread_level = "funneled"     # only the main thread calls MPI
        from mpi4py import MPI
    except ImportError:
        raise agreed(ElmanError(f"started by an MPI launcher as {size} processes, but mpi4py is not "
                                f"installed here: pip install 'elman[mpi]'"), rank != 0) from None
    world = MPI.COMM_WORLD
    if world.Get_size() != size:
        raise agreed(ElmanError(f"the launcher started {size} processes, but MPI sees {world.Get_size()}: "
                                f"mpiexec comes from another MPI than the one mpi4py uses (the mpi extra "
                                f"brings MPICH's mpiexec)"), rank != 0)
    comm = MPIComm(MPI, world)
    threads.set_threads(comm.threads_per_process())
    return comm


class MPIComm:
    """N processes of one MPI job (see the module's docstring)."""

    def __init__(self, MPI, world):
        self.MPI, self.world = MPI, world
        self.rank, self.size = world.Get_rank(), world.Get_size()
        self.writer = self.rank == 0
        # One bar for the job: rank 0's, drawn when the launcher's stderr is a terminal.
        progress.configure(terminal=launcher_on_terminal()) if self.writer else progress.configure(quiet=True)
        self.sync = GradSync(world, MPI)
        self.where = self._allgather_json(_here())

    # -- small messages: JSON bytes, never pickle (mpi4py's lower-case calls pickle)
    def _allgather_json(self, obj, comm=None) -> list:
        comm = comm or self.world
        n = comm.Get_size()
        mine = np.frombuffer(json.dumps(obj).encode(), np.uint8)
        sizes = np.empty(n, np.int64)
        comm.Allgather(np.array([mine.size], np.int64), sizes)
        bounds = np.r_[0, np.cumsum(sizes)]
        recv = np.empty(int(bounds[-1]), np.uint8)
        comm.Allgatherv(mine, [recv, (sizes, bounds[:-1]), self.MPI.BYTE])
        return [json.loads(recv[bounds[r]:bounds[r + 1]].tobytes()) for r in range(n)]

    def _bcast_json(self, obj):
        data = np.frombuffer(json.dumps(obj).encode(), np.uint8) if self.writer else None
        n = np.array([0 if data is None else data.size], np.int64)
        self.world.Bcast(n, root=0)
        buf = data.copy() if self.writer else np.empty(int(n[0]), np.uint8)
        self.world.Bcast(buf, root=0)
        return json.loads(buf.tobytes())

    def _idle_until_writer(self) -> None:
        """Wait for rank 0 sleeping, not spinning: MPI's blocking calls poll
        and would take a core from it (on a machine whose ranks share cores)."""
        req = self.world.Ibarrier()
        while not req.Test():
            time.sleep(0.002)

    # -- the interface
    def threads_per_process(self) -> int:
        """ELMAN_THREADS when set; else the cores this process is bound to,
        shared with the other processes of this machine bound to the same ones."""
        if os.environ.get("ELMAN_THREADS"):
            return threads.THREADS
        node = self.world.Split_type(self.MPI.COMM_TYPE_SHARED)
        try:
            mine = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
            sets = [tuple(s) for s in self._allgather_json(mine, node)]
        finally:
            node.Free()
        return max(1, len(mine) // sets.count(tuple(mine)))

    def fail(self, message: str) -> ElmanError:
        return self.mark(ElmanError(message))

    def mark(self, exc: BaseException) -> BaseException:
        """``exc`` as every process raises it: agreed, and printed by rank 0 only."""
        return agreed(exc, not self.writer)

    def agree(self, fn):
        """``fn()`` on every process; if it fails on any, every process raises
        the first failure (by rank), printed once."""
        try:
            result, error = fn(), None
        except ElmanError as exc:
            result, error = None, str(exc)
        errors = self._allgather_json(error)
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise self.fail(first)
        return result

    def writer_first(self, fn):
        """``fn()`` on rank 0, then on the others (one builds what they read, e.g. a cache)."""
        mine = self.agree(fn if self.writer else (lambda: None))
        return self.agree(lambda: mine if self.writer else fn())

    def on_writer(self, fn):
        """``fn()`` on rank 0 only, its JSON-able result given to every process.
        Rank 0 runs it with the threads of a process of its own: validation then
        cuts the vocabulary into the chunks, and adds the partial sums in the
        order, of ``elman eval`` on this machine, so the numbers are the same."""
        out = None
        if self.writer:
            try:
                with threads.using(threads.default_threads()):     # the others sleep meanwhile
                    out = {"ok": fn()}
            except ElmanError as exc:
                out = {"error": str(exc)}
            self.world.Ibarrier().Wait()
        else:
            self._idle_until_writer()
        out = self._bcast_json(out)
        if "error" in out:
            raise self.fail(out["error"])
        return out["ok"]

    def part(self, B: int) -> slice:
        if B % self.size:
            raise self.fail(f"--batch {B}: {self.size} processes cannot share {B} streams equally; "
                            f"use a batch that {self.size} divides (e.g. {self.size * max(1, round(B / self.size))})")
        n = B // self.size
        return slice(self.rank * n, (self.rank + 1) * n)

    def allreduce_grads(self, grads: dict, loss: float, flags=()):
        return self.sync.allreduce(grads, loss, flags)

    def gather_streams(self, h: np.ndarray) -> np.ndarray:
        """The full (B,Dh) state on every process, each one's rows (``part``) from it."""
        full = np.empty_like(h)
        self.world.Allgather(np.ascontiguousarray(h[self.part(len(h))]), full)
        return full

    def lead(self, x: float) -> float:
        """Rank 0's ``x`` on every process: a decision that reads each one's own
        clock (the budget's ramp) must be one, or the replicas drift apart."""
        buf = np.array([x], np.float64)
        self.world.Bcast(buf, root=0)
        return float(buf[0])

    def anyone(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any process."""
        both = np.array([bool(flag)], np.int32)
        self.world.Allreduce(self.MPI.IN_PLACE, both, op=self.MPI.MAX)
        return bool(both[0])

    def check_same(self, options: dict) -> None:
        """Refuse a job whose processes were started with different options."""
        every = self._allgather_json(options)
        for r, theirs in enumerate(every):
            diff = sorted(k for k in set(theirs) | set(every[0]) if theirs.get(k) != every[0].get(k))
            if diff:
                k = diff[0]
                raise self.fail(f"the processes were started with different options: {k} is "
                                f"{every[0].get(k)!r} on process 0 but {theirs.get(k)!r} on process {r} "
                                f"(every process of a run needs the same command line)")

    def check_params(self, params: dict, when: str) -> None:
        """Every process must hold the same weights (the same sums, the same
        updates); a cheap checksum catches an MPI whose all-reduce does not
        give every process the same bits."""
        crc = 0
        for v in params.values():
            crc = zlib.crc32(np.ascontiguousarray(v).view(np.uint8), crc)
        every = np.empty(self.size, np.int64)
        self.world.Allgather(np.array([crc], np.int64), every)
        if (every != every[0]).any():
            raise self.fail(f"the processes hold different weights {when} (the MPI library's all-reduce "
                            f"does not give every process the same sums); stopped")

    def calibrate(self, state=None) -> None:
        self.sync.calibrate(state)

    def cost_state(self):
        return self.sync.state()

    def share(self, p, opt) -> None:
        """Weights and optimizer state held once a machine, each process
        updating its slice (``gradsync.GradSync.share``); every process
        calls it with the same values, before the first update."""
        self.sync.share(p, opt)

    def step(self, opt, params: dict, grads: dict, later=()) -> float:
        if later:       # the processes' steps are made whole (``training.cores.overlaps``)
            raise ValueError("a step of several processes leaves no update for later")
        return self.sync.step(opt, params, grads)

    @property
    def deferred(self) -> bool:
        return self.sync.deferred

    def stats(self):
        return self.sync.stats()

    @contextlib.contextmanager
    def guard(self):
        """A failure that is not agreed ends the whole job at once, in one line."""
        try:
            yield
        except BaseException as exc:
            if getattr(exc, "agreed", False) or isinstance(exc, SystemExit):
                raise
            interrupted = isinstance(exc, KeyboardInterrupt)
            why = "interrupted" if interrupted else (str(exc).splitlines() or [type(exc).__name__])[0]
            print(f"elman: error: process {self.rank} of {self.size} ({self.where[self.rank]}): {why}; "
                  f"stopping every process", file=sys.stderr, flush=True)
            self.world.Abort(130 if interrupted else 2)
