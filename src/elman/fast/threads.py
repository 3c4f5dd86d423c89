"""Sharing work between the cores: elman's own threads, BLAS on one thread.

NumPy releases the GIL inside BLAS calls and element-wise loops, so Python
threads running single-threaded products and ufuncs on their own slices of
an array keep several cores busy. elman splits the output layer's (N,V)
work into column chunks of the vocabulary itself instead of letting BLAS split each
product:

- a chunk's softmax passes (exp over (N,V) is most of the non-product
  work) run right after its product, on the same core, while it is in
  cache, and they run on every core, where NumPy alone would use one;
- BLAS's own worker threads spin for ~0.1 s after each call and would take
  a core away from that element-wise work; pinned to one thread they sleep;
- chunks are handed out as threads come free. On a machine whose other
  core is busy with another program, a thread may wait a whole scheduler
  time slice (~10 ms) to run; a product split in advance waits for it,
  here the running thread takes the chunks instead.

The many small products of the time loop run on one BLAS thread too
(``one_blas_thread``): a second thread gains microseconds and may cost a
time slice every step. Without threadpoolctl (which pins BLAS), or on one
core, everything runs on the calling thread and BLAS threads as it likes.
"""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

_BLAS = [None]                  # threadpoolctl's BLAS controllers, found on first use
_POOL = [None, None]            # (pid, executor): a forked child makes its own
_LOCK = threading.Lock()


def cores() -> int:
    """The cores this process may run on (its affinity: what MPI or taskset bound it to)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:      # not Linux
        return os.cpu_count() or 1


def _threads() -> int:
    """ELMAN_THREADS when set (a positive integer), else every core this process may use."""
    try:
        wanted = int(os.environ.get("ELMAN_THREADS", ""))
    except ValueError:
        wanted = 0
    return wanted if wanted > 0 else cores()


THREADS = _threads()


def _blas():
    if _BLAS[0] is None:
        try:
            from threadpoolctl import ThreadpoolController
            _BLAS[0] = ThreadpoolController().select(user_api="blas")
            if THREADS < cores():           # ELMAN_THREADS: BLAS keeps to it too
                _BLAS[0].limit(limits=THREADS)
        except ImportError:
            _BLAS[0] = False
    return _BLAS[0]


def set_threads(n: int) -> None:
    """Use ``n`` threads from now on: elman's own and BLAS's (one MPI rank of
    several on a machine takes its share of the cores, not all of them)."""
    global THREADS
    THREADS = max(1, int(n))
    if _POOL[1] is not None:
        _POOL[1].shutdown(wait=False)
    _POOL[:] = [None, None]                 # the next parallel_for makes a pool of the new size
    if _blas():
        _blas().limit(limits=THREADS)       # kept until changed: BLAS's own default is every core


@contextlib.contextmanager
def using(n: int):
    """``set_threads(n)`` for a while, then back (an MPI rank evaluating
    while the others wait: with the threads, and so the column chunks and
    the sums, that ``elman eval`` would use)."""
    before = THREADS
    set_threads(n)
    try:
        yield
    finally:
        set_threads(before)


def default_threads() -> int:
    """What a process of its own would use: ELMAN_THREADS, else its cores."""
    return _threads()


_HELD = [0, None]                # one_blas_thread contexts open, and the outermost's limiter


@contextlib.contextmanager
def one_blas_thread():
    """A context in which numpy's BLAS runs on the calling thread only, for
    loops of small products. A no-op without threadpoolctl or on one core.

    BLAS's thread count is the process's, so the contexts nest and overlap
    across threads as one: the first to open sets it, the last to close
    restores it, and those between cost nothing (threadpoolctl's call takes
    about 0.1 ms, a tenth of a scoring window's work)."""
    if not _blas() or THREADS == 1:         # _blas() first: it applies ELMAN_THREADS to BLAS
        yield
        return
    with _LOCK:
        _HELD[0] += 1
        if _HELD[0] == 1:
            _HELD[1] = _blas().limit(limits=1)
    try:
        yield
    finally:
        with _LOCK:
            _HELD[0] -= 1
            if _HELD[0] == 0:
                _HELD[1].restore_original_limits()


def _executor():
    if _POOL[0] != os.getpid():
        _POOL[:] = [os.getpid(), ThreadPoolExecutor(max(1, THREADS - 1), thread_name_prefix="elman")]
    return _POOL[1]


# The rows a thread's block of a product should have where every block
# shares the other factor (``row_blocks``): each call packs that factor
# again, so small blocks pay for it again and again. Sampled softmax,
# N = 640 rows by S = 1000 gathered columns, two threads: the forward's
# products in 53-row blocks 1.9 ms, in one block a thread 1.0 ms.
BLAS_ROWS = 256


def row_blocks(n: int) -> list:
    """Split range(n) into blocks for a product whose other factor every
    block shares: as ``chunks`` with blocks of at least BLAS_ROWS rows, but
    never fewer blocks than threads (a thread left idle costs more than
    small blocks do)."""
    return _split(n, max(len(chunks(n, BLAS_ROWS)), min(THREADS, n)))


def chunks(n: int, min_size: int) -> list:
    """Split range(n) into slices for the threads: 6 per thread when each can
    still hold ``min_size``, one slice for small work. Small enough that a
    thread that also runs other work (``output_backward``'s overlap) or
    loses its core for a while to another program leaves the rest to the
    others, large enough that BLAS runs each part as fast as the whole
    (measured: a product h U[:, c] over 1/12 of 10k columns)."""
    return _split(n, max(1, min(6 * THREADS, n // min_size) if THREADS > 1 else 1))


def _split(n: int, k: int) -> list:
    """range(n) in k slices of sizes differing by one at most, in order."""
    return [slice(n * i // k, n * (i + 1) // k) for i in range(k)]


def parallel_for(fn, n: int, serial: bool = False, first=None):
    """Call ``fn(i)`` for every i in range(n) on up to ``THREADS`` threads,
    with BLAS pinned to one thread (so the threads' products do not each
    start BLAS threads of their own): the tasks are a ``Shared`` job the
    calling thread joins with THREADS - 1 helpers. With ``serial`` (work too small
    to share), without threadpoolctl, or for one task, everything runs on
    the calling thread.

    ``first``: a function of no arguments taken as the first task, so one
    thread runs it while the others share ``fn``'s (work that needs one
    core, e.g. a recurrence, beside work that any number can share).
    Returns its result (None without it).
    """
    result = []
    one = first is not None

    def task(i):
        if one and i == 0:
            result.append(first())
        else:
            fn(i - one)

    if serial or n + one <= 1 or THREADS == 1 or not _blas():
        for i in range(n + one):
            task(i)
    else:
        Shared(task, n + one).join(helpers=THREADS - 1)
    return result[0] if one else None


def compiled_for(fn, n: int, serial: bool = False) -> None:
    """``parallel_for`` for tasks that each are one call holding no GIL
    while it works (a compiled loop, a BLAS product); where the windows step
    on one thread beside a spare (``spare``), the spare takes some of them too.
    ``serial``: as ``parallel_for``'s, work too small to share."""
    if not serial and THREADS == 1 and _SPARE[0] is not None and n > 1 and _blas():
        job = Shared(fn, n)
        _SPARE[0].submit(job.work)          # if the spare is busy, join() below takes every task
        job.join()
    else:
        parallel_for(fn, n, serial=serial)


class Shared:
    """Tasks ``fn(i)``, i in range(n), that any thread may take as it comes
    free: ``work()`` takes them until none is left (a helper between jobs
    of its own, until it is wanted for the next), ``join()`` does too and
    then waits for the ones other threads hold. The first exception a task
    raises, ``join`` raises. ``blas_one``: BLAS on one thread while a
    thread works on them (False for tasks that run no products: a file's
    writing must not pin the process's BLAS meanwhile)."""

    def __init__(self, fn, n: int, blas_one: bool = True):
        self.fn, self.todo, self.left, self.blas_one = fn, iter(range(n)), n, blas_one
        self.lock, self.done, self.error = threading.Lock(), threading.Event(), None
        if n == 0:
            self.done.set()

    def work(self, stop=None) -> None:
        """Take tasks until none is left or the event ``stop`` is set."""
        with one_blas_thread() if self.blas_one else contextlib.nullcontext():
            while stop is None or not stop.is_set():
                i = next(self.todo, None)       # atomic under the GIL
                if i is None:
                    break
                try:
                    self.fn(i)
                except BaseException as exc:     # raised by join, on the caller's thread
                    self.error = self.error or exc
                with self.lock:
                    self.left -= 1
                    if self.left == 0:
                        self.fn = None      # what the tasks held (a checkpoint's bytes) goes when they are done
                        self.done.set()

    def join(self, helpers: int = 0) -> None:
        """Take the tasks left, with up to ``helpers`` more threads of the
        pool (one that has not started by the time every task is done is
        cancelled, not waited for); wait for all."""
        futures = []
        if THREADS > 1 and _blas():
            futures = [_executor().submit(self.work) for _ in range(max(0, min(helpers, THREADS - 1)))]
        self.work()
        self.done.wait()
        for f in futures:
            f.cancel()
        if self.error is not None:
            raise self.error


class Helper:
    """A thread of its own that works on one ``Shared`` job at a time:
    ``start(fn, n)`` hands it the tasks fn(i), i < n, once the job before is
    done; ``wait()`` takes the tasks it has not begun, waits for the rest and
    raises what one raised; ``close()`` waits, then lets the thread go.
    ``pool``: its executor (what ``spare`` takes)."""

    def __init__(self, name: str, blas_one: bool = True):
        self.pool, self.blas_one = ThreadPoolExecutor(1, thread_name_prefix=name), blas_one
        self.pending: Shared | None = None

    def start(self, fn, n: int) -> None:
        self.wait()
        self.pending = Shared(fn, n, self.blas_one)
        self.pool.submit(self.pending.work)

    def wait(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.join()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.pool.shutdown()


_SPARE = [None]     # a one-thread executor its owner keeps free for ``beside`` (``training.cores``), or None


@contextlib.contextmanager
def spare(executor):
    """``beside`` starts its work on ``executor`` for a while (None: as before)."""
    before = _SPARE[0]
    _SPARE[0] = executor
    try:
        yield
    finally:
        _SPARE[0] = before


def beside(fn):
    """Start ``fn()`` on a helper thread while the caller goes on (work that
    releases the GIL, e.g. a compiled loop, beside a sequential recurrence);
    returns a function that waits for and returns its result. On the spare
    thread where one is set (``spare``: the training windows' second core
    while they step on one); else on one thread, or without threadpoolctl,
    ``fn`` runs at once on the caller's."""
    if _SPARE[0] is not None:
        return _SPARE[0].submit(fn).result
    if THREADS == 1 or not _blas():
        value = fn()
        return lambda: value
    return _executor().submit(fn).result
