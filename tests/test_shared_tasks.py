"""``threads.Shared``: tasks any thread takes, each exactly once; and the
scoring pipeline that shares a window's output rows through it."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from elman.fast import threads
from elman.fast.threads import Shared, beside


def test_every_task_runs_once_whoever_takes_it():
    seen, lock = [], threading.Lock()

    def task(i):
        time.sleep(0.001 * (i % 3))
        with lock:
            seen.append((i, threading.get_ident()))
    job = Shared(task, 40)
    other = beside(job.work)            # a helper takes tasks too (inline on one thread)
    job.join(helpers=2)
    other()
    assert sorted(i for i, _ in seen) == list(range(40))
    assert job.done.is_set() and job.left == 0


def test_a_stopped_worker_leaves_the_rest_to_join():
    stop = threading.Event()
    stop.set()
    ran = []
    job = Shared(ran.append, 5)
    job.work(stop=stop)                 # wanted elsewhere: takes nothing
    assert ran == [] and not job.done.is_set()
    job.join()
    assert ran == list(range(5))
    Shared(ran.append, 0).join()        # no tasks: nothing to wait for


def test_the_first_error_is_raised_by_join_and_every_task_still_runs():
    ran = []

    def task(i):
        ran.append(i)
        if i in (2, 4):
            raise ValueError(f"task {i}")
    job = Shared(task, 6)
    with pytest.raises(ValueError, match="task 2"):
        job.join()
    assert ran == list(range(6))


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_pipelined_class_scoring_equals_window_by_window(n_threads):
    """window_losses over many windows (streams dropping out, a fresh start
    in the middle), its output rows shared as tasks, gives each window's
    forward_losses exactly, on one thread or several."""
    from elman.model import Params, forward_losses, window_losses
    rng = np.random.default_rng(n_threads)
    V, B = 120, 5
    p = Params.init(V, 6, 9, seed=1, classes=7, counts=np.arange(V, 0, -1), direct=4000, direct_order=3)
    p.scoring = "compiled"
    x, y = rng.integers(0, V, (B, 60)), rng.integers(0, V, (B, 60))
    h0 = rng.random((B, 9)).astype(np.float32)
    fresh = (rng.random((3, 9)).astype(np.float32), rng.integers(-1, V, (3, 1)))
    windows = [(x[:, :12], y[:, :12]), (x[:, 12:30], y[:, 12:30]), (x[:4, 30:41], y[:4, 30:41]),
               (x[:3, 41:50], y[:3, 41:50], fresh), (x[:3, 50:], y[:3, 50:])]
    with threads.using(n_threads):
        got = list(window_losses(p, iter(windows), h0))
    h, history = h0, None
    for (losses, h_last), w in zip(got, windows):
        if len(w) > 2:
            h, history = w[2]
        want, h_want = forward_losses(p, w[0], w[1], h[:len(w[0])], history)
        assert np.array_equal(losses, want) and np.array_equal(h_last, h_want)
        ctx = np.concatenate([np.full((len(w[0]), 1), -1) if history is None else history[:len(w[0])], w[0]], 1)
        h, history = h_last, ctx[:, -1:]


@pytest.mark.parametrize("blas_one", [True, False])
def test_a_helper_runs_one_job_at_a_time_and_pins_blas_only_when_asked(monkeypatch, blas_one):
    """``threads.Helper``: jobs in the order started, an error raised by the
    next wait, and BLAS held to one thread during a job only with
    ``blas_one`` (a checkpoint's writing must not pin it)."""
    monkeypatch.setattr(threads, "THREADS", 2)
    if not threads._blas():
        pytest.skip("threadpoolctl finds no BLAS")
    helper, seen = threads.Helper("test-helper", blas_one=blas_one), []
    gate = threading.Event()

    def first(i):
        gate.wait(5)
        seen.append(("first", threads._HELD[0]))
    helper.start(first, 1)
    time.sleep(0.05)                    # the helper holds the first job, waiting at the gate
    gate.set()
    helper.start(lambda i: seen.append(("second", i)), 2)     # waits for the first job first
    helper.wait()
    assert seen[0] == ("first", 1 if blas_one else 0)
    assert sorted(seen[1:]) == [("second", 0), ("second", 1)]

    def fails(i):
        raise OSError("disk full")
    helper.start(fails, 1)
    with pytest.raises(OSError, match="disk full"):
        helper.wait()
    helper.close()


def test_a_helper_lets_what_a_finished_job_held_go():
    """A job's function (a checkpoint's bytes, for the saver) is freed once
    its tasks are done, not kept until the next job: two checkpoints' bytes
    at once would be the run's peak memory."""
    import gc
    import weakref

    class Held:
        pass
    held = Held()
    ref = weakref.ref(held)
    helper = threads.Helper("test-helper", blas_one=False)
    ran = threading.Event()

    def job(i, held=held):
        ran.set()
    helper.start(job, 1)
    del held, job
    assert ran.wait(5)
    for _ in range(100):                # the helper thread finishes the task's bookkeeping
        gc.collect()
        if ref() is None:
            break
        time.sleep(0.01)
    assert ref() is None
    helper.close()


@pytest.mark.parametrize("n_threads, n, blocks", [(2, 640, 2), (2, 1280, 5), (2, 320, 2), (16, 640, 16),
                                                  (1, 640, 1), (4, 3, 3), (2, 0, 1), (2, 10_000, 12)])
def test_row_blocks_are_large_but_leave_no_thread_idle(monkeypatch, n_threads, n, blocks):
    """Blocks of BLAS_ROWS rows or more where there are rows enough, one a
    thread at least (up to six), covering range(n) once, in order."""
    monkeypatch.setattr(threads, "THREADS", n_threads)
    got = threads.row_blocks(n)
    assert len(got) == blocks
    assert [i for s in got for i in range(n)[s]] == list(range(n))


def test_compiled_tasks_are_shared_with_the_windows_spare():
    """One thread stepping the windows with a spare beside it: the spare
    takes tasks too, each runs once; with the spare busy the caller takes
    them all (and never waits for the spare)."""
    from concurrent.futures import ThreadPoolExecutor
    spare = ThreadPoolExecutor(1)
    seen, lock = [], threading.Lock()

    def task(i):
        time.sleep(0.002)
        with lock:
            seen.append((i, threading.get_ident()))
    with threads.using(1), threads.spare(spare):
        threads.compiled_for(task, 20)
        assert sorted(i for i, _ in seen) == list(range(20))
        if threads._blas():
            assert len({t for _, t in seen}) == 2          # the caller and the spare
        seen.clear()
        busy = threading.Event()
        spare.submit(busy.wait)                            # the spare works on something else
        threads.compiled_for(task, 6)
        assert sorted(i for i, _ in seen) == list(range(6)) and {t for _, t in seen} == {threading.get_ident()}
        busy.set()
        seen.clear()
        threads.compiled_for(task, 20, serial=True)        # too small to share: the caller alone, in order
        assert seen == [(i, threading.get_ident()) for i in range(20)]
    spare.shutdown()


def test_a_class_layer_shared_with_the_spare_has_the_same_bits(monkeypatch):
    """The grouped products shared with the spare (as at a large V) or made
    on the training thread alone: the same losses and gradients, bit for bit."""
    from concurrent.futures import ThreadPoolExecutor
    from elman.core.classes import word_classes
    from elman.fast import grouped
    from elman.model import Params
    rng = np.random.default_rng(6)
    p = Params.init(400, 8, 16, seed=1, dtype=np.float32, classes=20, counts=np.arange(400, 0, -1))
    p.b2[...] = rng.standard_normal(400)
    y, h = rng.integers(0, 400, 120), rng.random((120, 16)).astype(np.float32)

    def run():
        plan = grouped.Plan(word_classes(p.class_bounds, y), p.class_bounds)
        losses, cache = grouped.grouped_losses(h, p.U, p.b2, y, plan)
        losses = losses.copy()
        dh, (hw, w), _ = grouped.grouped_backward(0.25, cache, product=True)
        return losses, dh, cache.flat.copy()

    spare = ThreadPoolExecutor(1)
    with threads.using(1), threads.spare(spare):
        alone = run()
        monkeypatch.setattr(grouped, "SHARE_BYTES", 0)
        shared = run()
    spare.shutdown()
    assert all(np.array_equal(a, b) for a, b in zip(alone, shared))
