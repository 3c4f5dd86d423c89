"""Lines scored each from a start of their own (``inference.rows.batched``):
every batch's windows in one compiled pipeline, each batch from its own
state, against each line run alone through the gradient pass."""
import numpy as np
import pytest

from elman.core.params import Params
from elman.fast import threads
from elman.inference.rows import batched
from elman.model import bptt
from elman.model.perplexity import input_table

V, EOS = 40, 0


def _model(dtype="float64"):
    p = Params.init(V=V, d=6, Dh=9, seed=3, dtype=dtype, classes=5, counts=np.arange(80, 40, -1), direct=400)
    p.D[...] = np.random.default_rng(0).normal(0, 0.3, p.D.shape)
    return p


def _rows(n=23, seed=5):
    rng = np.random.default_rng(seed)
    return [np.r_[rng.integers(1, V, int(k)), EOS] for k in rng.integers(0, 30, n)]


def _alone(p, row, h0, first, history):
    x = np.r_[first, row[:-1]][None]
    return bptt(p, x, row[None], h0[None], per_position=True, history=history)[0][0]


@pytest.mark.parametrize("started", [False, True])
def test_batches_in_one_pipeline_are_each_line_alone(started):
    """Windows of 8 columns, 16 positions a batch: many batches, rows cut
    into windows with their state carried, each batch restarting from its
    rows' own states (and, given, their words before and first words)."""
    p = _model()
    rows = _rows()
    rng = np.random.default_rng(7)
    h0 = rng.uniform(0, 1, (len(rows), 9)) if started else None
    first = rng.integers(1, V, len(rows)) if started else None
    history = rng.integers(-1, V, (len(rows), 2)) if started else None
    got = batched(p, rows, EOS, h0, positions=16, window=8, history=history, first=first)
    for i, row in enumerate(rows):
        ref = _alone(p, row, np.zeros(9) if h0 is None else h0[i], EOS if first is None else first[i],
                     None if history is None else history[i:i + 1])
        np.testing.assert_allclose(got[i], ref, rtol=1e-12, atol=1e-12)


def test_the_input_table_and_the_threads_change_no_bit():
    """float32: the table's rows are the products' rows, and the rows' tasks
    give the same sums on one thread as on two."""
    p = _model("float32")
    rows = _rows(60, seed=9)
    table = input_table(p, V)
    runs = []
    for n in (1, 2):
        with threads.using(n):
            runs.append(batched(p, rows, EOS, table=table, positions=64, window=16))
            runs.append(batched(p, rows, EOS, positions=64, window=16))
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            np.testing.assert_allclose(a, b, rtol=2e-6)
    for a, b in zip(runs[0], runs[2]):           # with the table, one thread and two
        assert np.array_equal(a, b)
