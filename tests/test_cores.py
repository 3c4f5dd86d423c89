"""The output layer's updates on a second thread (``training.cores``): the
same numbers as steps made whole, and an update's error reaches the trainer."""
import numpy as np
import pytest

from elman.model import Params, bptt
from elman.fast import threads
from elman.training import cores
from elman.training.cores import LATER, Overlap
from elman.training.state import Settings, make_run_optimizer
from elman.training.train import train
from helpers import SMALL, write_corpus

from test_train import _arrays


def _grads(p, x, y):
    _, grads, _ = bptt(p, x, y, np.zeros((len(x), p.Dh), p.dtype), sparse=True, deferred=True, scale=1.0 / x.size)
    grads["D"] *= p.dtype.type(x.size)
    return grads


@pytest.mark.parametrize("optimizer", ["adagrad", "sgd"])
def test_a_step_with_updates_left_for_later_makes_them_only_when_called(optimizer):
    counts = np.arange(40, 0, -1)
    p = Params.init(40, 6, 8, seed=0, dtype=np.float32, direct=5000, direct_order=3, classes=5, counts=counts)
    q = p.copy()
    s = Settings(train="", valid="", optimizer=optimizer)
    whole, split = (make_run_optimizer(s, m.as_dict()) for m in (p, q))
    rng = np.random.default_rng(0)
    for _ in range(3):
        x, y = rng.integers(0, p.V, (2, 4, 5))
        before = {k: v.copy() for k, v in q.as_dict().items()}
        whole.step(p.as_dict(), _grads(p, x, y))
        split.step(q.as_dict(), _grads(q, x, y), later=LATER)
        assert whole.deferred is None and split.deferred is not None
        for k, v in q.as_dict().items():     # the recurrence's tensors moved, the output layer's not yet
            if v.dtype.kind != "f":
                continue
            assert np.array_equal(v, before[k]) == (k in LATER), k
        assert len(split.deferred) > len(LATER)     # U's step in spans of columns, taken by any thread
        for update in reversed(split.deferred):     # in any order
            update()
        for k, v in q.as_dict().items():
            assert np.array_equal(v, p.as_dict()[k]), k


def test_training_with_the_overlap_ends_with_the_same_weights_to_the_bit(tmp_path, monkeypatch):
    tr, va = write_corpus(tmp_path)
    options = dict(train=tr, valid=va, epochs=2, classes=3, direct=0.01, checkpoint_every=7, **SMALL)
    used, real = [], Overlap.__init__

    def spy(self, on):
        used.append(on)
        real(self, on)
    monkeypatch.setattr(Overlap, "__init__", spy)
    monkeypatch.delenv("ELMAN_THREADS", raising=False)
    for on in (False, True):        # the trainer's own decision, from the cores it sees
        monkeypatch.setattr(threads, "THREADS", 2 if on else 1)
        train(tmp_path / str(on), options, quiet=True)
    assert used == [False, False, True, True]          # one Overlap an epoch, on in the second run only
    for slot in ("best", "last"):
        a, b = _arrays(tmp_path / "False", slot), _arrays(tmp_path / "True", slot)
        assert a.keys() == b.keys() and {"U", "D", "H"} <= a.keys()
        for k in a:
            assert np.array_equal(a[k], b[k]), (slot, k)


def test_an_error_in_the_deferred_updates_is_raised_on_the_training_thread():
    def fail():
        raise FloatingPointError("boom")
    made = []

    class Opt:
        lr = 1.0
        deferred = [fail, lambda: made.append(1)]
    overlap, opt = Overlap(True), Opt()
    overlap.start(opt)
    assert opt.deferred is None
    with pytest.raises(FloatingPointError, match="boom"):
        overlap.ready(opt, 0.5)()
    assert made == [1]               # the others were made all the same
    assert opt.lr == 1.0             # the rate of the next step is not set past a failed one
    overlap.close()


def test_the_overlap_runs_only_for_one_process_stepping_on_one_thread_of_several(monkeypatch):
    from types import SimpleNamespace
    from elman.fast import threads
    monkeypatch.delenv("ELMAN_THREADS", raising=False)

    def run(classes, size=1):
        return SimpleNamespace(params=SimpleNamespace(classes=classes), comm=SimpleNamespace(size=size))
    for n, classes, size, want in ((2, 50, 1, True), (1, 50, 1, False), (2, 0, 1, False), (4, 50, 1, False),
                                   (2, 50, 2, False)):
        monkeypatch.setattr(threads, "THREADS", n)
        assert cores.overlaps(run(classes, size)) == want, (n, classes, size)
    monkeypatch.setenv("ELMAN_THREADS", "1")
    monkeypatch.setattr(threads, "THREADS", 1)
    assert not cores.overlaps(run(50))


def test_beside_runs_on_the_spare_thread_where_one_is_set(monkeypatch):
    import threading
    from concurrent.futures import ThreadPoolExecutor
    where = []

    def fn():
        where.append(threading.current_thread().name)
        return 7
    monkeypatch.setattr(threads, "THREADS", 1)
    value = threads.beside(fn)
    assert where == [threading.current_thread().name]       # one thread, no spare: at once, here
    assert value() == 7 and value() == 7 and len(where) == 1
    where.clear()
    with ThreadPoolExecutor(1, thread_name_prefix="spare") as pool, threads.spare(pool):
        value = threads.beside(fn)
        assert value() == 7 and where[0].startswith("spare")
    assert threads._SPARE[0] is None
