"""The arithmetic of data-parallel training, in one process: the processes'
shares of a batch add up to the one-process gradients, the sparse sums, and
the cost model's choices. (test_mpi.py runs the real thing under mpiexec.)"""
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from elman.model import Params, bptt, dropout_masks
from elman.core.sampled import Sampler, unigram_proposal
from elman.core.sparse import SparseGrad, densify
from elman.errors import ElmanError
from elman.training import rundir
from elman.training.distributed import Local, connect
from elman.training.gradsync import OVERRIDE, CostModel
from elman.training.nodeshare import shard
from elman.training.nodesync import sum_parts
from elman.training.train import train
from helpers import SMALL, write_corpus


def test_each_process_applies_its_rows_of_the_one_process_masks():
    p = Params.init(V=11, d=5, Dh=7, seed=0)
    full = dropout_masks(p, 6, 4, 0.3, (3, 9))
    for first in (0, 2, 4):
        part = dropout_masks(p, 2, 4, 0.3, (3, 9), streams=(first, 6))
        for m, f in zip(part, full):
            assert np.array_equal(m, f.reshape(4, 6, -1)[:, first:first + 2].reshape(8, -1))
    with pytest.raises(ValueError, match="not among the 6"):
        dropout_masks(p, 2, 4, 0.3, 1, streams=(5, 6))


@pytest.mark.parametrize("sampled", [False, True])
def test_the_shares_of_a_batch_sum_to_the_one_process_gradients(sampled):
    """What N processes compute, each with scale 1/(B·T) over its streams,
    sums to bptt over all B streams: dropout masks and samples as in one process."""
    rng = np.random.default_rng(0)
    p = Params.init(V=23, d=6, Dh=8, seed=1, dtype="float64")
    B, T = 6, 5
    x, y, h0 = rng.integers(0, 23, (B, T)), rng.integers(0, 23, (B, T)), rng.uniform(0, 1, (B, 8))
    draw = (Sampler(unigram_proposal(np.arange(23, 0, -1)), 7, seed=3).draw(2),) if sampled else None
    sampled_arg = (draw[0], np.log(unigram_proposal(np.arange(23, 0, -1)))) if sampled else None
    loss, grads, h = bptt(p, x, y, h0, sampled=sampled_arg, dropout=(0.3, (0, 2)), scale=1 / (B * T))
    total, summed, hs = 0.0, None, []
    for lo in range(0, B, 2):
        part = slice(lo, lo + 2)
        l, g, hp = bptt(p, x[part], y[part], h0[part], sampled=sampled_arg, sparse=True,
                        dropout=(0.3, (0, 2), (lo, B)), scale=1 / (B * T))
        g = densify(g)
        total, summed = total + l, g if summed is None else {k: summed[k] + g[k] for k in g}
        hs.append(hp)
    assert np.isclose(total, loss, rtol=1e-12)
    assert np.allclose(np.concatenate(hs), h, rtol=0, atol=1e-14)
    for k in grads:
        assert np.allclose(summed[k], grads[k], rtol=1e-10, atol=1e-14), k


@pytest.mark.parametrize("axis", [0, -1])
def test_gathered_sparse_gradients_sum_like_dense_ones(axis):
    rng = np.random.default_rng(2)
    shape = (9, 4) if axis == 0 else (4, 9)
    parts, dense = [], np.zeros(shape)
    for ids in ([1, 4, 7], [0, 4], [], [7, 8]):
        values = rng.standard_normal((len(ids), 4) if axis == 0 else (4, len(ids)))
        g = SparseGrad(np.array(ids, np.int64), values, shape, axis)
        dense += g.dense()
        parts.append((g.index, g.values))
    s = sum_parts(parts, g)
    assert list(s.index) == [0, 1, 4, 7, 8]
    assert np.array_equal(s.dense(), dense)


@pytest.mark.parametrize("axis", [0, -1])
def test_a_slices_sum_is_the_sums_entries_in_the_slice(axis):
    """One process's slice of the sum (``nodeshare``): its ids and values are
    those of the whole sum there, to the bit."""
    rng = np.random.default_rng(3)
    shape = (12, 3) if axis == 0 else (3, 12)
    parts = []
    for ids in ([1, 4, 7, 11], [0, 4, 5], [7, 8]):
        values = rng.standard_normal((len(ids), 3) if axis == 0 else (3, len(ids)))
        parts.append((np.array(ids, np.int64), values))
    g = SparseGrad(*parts[0], shape, axis)
    whole = sum_parts(parts, g)
    for lo, hi in ((0, 5), (5, 12), (4, 8)):
        cut = []
        for ids, values in parts:
            i0, i1 = np.searchsorted(ids, (lo, hi))
            cut.append((ids[i0:i1], values[i0:i1] if axis == 0 else values[:, i0:i1]))
        s = sum_parts(cut, g, (lo, hi))
        keep = (whole.index >= lo) & (whole.index < hi)
        assert np.array_equal(s.index, whole.index[keep])
        assert np.array_equal(s.values, whole.values[keep] if axis == 0 else whole.values[:, keep])


def test_a_scatter_added_a_slice_at_a_time_is_the_whole_step():
    """The direct weights' plain step as the processes of a machine take it,
    each slice of the table in turn: each cell's arithmetic is the whole
    step's, so the bits are the same."""
    from elman.fast.kernels_direct import ScatterGrad
    from test_direct import instance
    p, x, y, h0, hist = instance(V=12, d=3, Dh=4, B=3, T=5, N=4, M=4000, K=3, seed=3)
    g = bptt(p, x, y, h0, sparse=True, history=hist, deferred=True, scale=1 / 15)[1]["D"]
    assert isinstance(g, ScatterGrad)
    whole, sliced = p.D.copy(), p.D.copy()
    g.apply(whole, 0.7)
    for r in range(3):
        g.apply(sliced, 0.7, shard(len(sliced), r, 3))
    assert np.array_equal(whole, sliced) and not np.array_equal(whole, p.D)


def test_the_cost_model_gathers_what_is_cheaper_to_gather(monkeypatch):
    monkeypatch.delenv(OVERRIDE, raising=False)
    cost = CostModel(allreduce=(5e-6, 1e-9), allgather=(5e-6, 1e-9), gamma=1e-10, processes=2)
    # The embedding of a 10k vocabulary: 1280 rows of 8 MB; a 17-word one: more ids than entries.
    assert cost.gather({"L": 8_000_000}, {"L": 1280 * 808}, {"L": 1280}) == {"L"}
    assert cost.gather({"L": 680}, {"L": 48 * 48}, {"L": 48}) == set()
    # A saving smaller than one more latency is not worth a second collective.
    assert cost.gather({"b2": 1000}, {"b2": 900}, {"b2": 75}) == set()
    # The direct weights of 64 machines: 64 x 260k cells (ids, values) of an 8 MB table. On the wire
    # alone gathering is cheaper; their indexed sum and steps (per_id, measured) are not.
    D = ({"D": 8_000_000}, {"D": 64 * 260_000 * 12}, {"D": 64 * 260_000})
    wire = CostModel(allreduce=(5e-6, 1e-9), allgather=(5e-6, 1e-11), gamma=1e-12, processes=64)
    assert wire.gather(*D) == {"D"}
    assert CostModel(**{**wire.state(), "per_id": 5e-9}).gather(*D) == set()
    monkeypatch.setenv(OVERRIDE, "gather")
    assert cost.gather({"L": 680}, {"L": 48 * 48}, {"L": 48}) == {"L"}
    assert CostModel.from_state(cost.state()).state() == cost.state()
    # A model saved without per_id makes the choices it made then: ids cost nothing extra.
    old = {k: v for k, v in cost.state().items() if k != "per_id"}
    assert CostModel.from_state(old).per_id == 0.0


def test_one_process_is_local_and_its_collectives_are_the_identity(monkeypatch):
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    comm = connect()
    assert isinstance(comm, Local) and comm.size == 1 and comm.part(32) == slice(0, 32)
    g = {"a": np.ones(3)}
    assert comm.allreduce_grads(g, 2.5, (True, 0)) == (g, 2.5, (True, False))


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    held = rundir.lock(tmp_path / "m", create=True)
    try:
        with pytest.raises(ElmanError, match=rf"another elman train is writing to it "
                                             rf"\(host {socket.gethostname()}, pid \d+\)"):
            rundir.lock(tmp_path / "m", create=True)
    finally:
        held.release()
    rundir.lock(tmp_path / "m", create=False).release()      # released: free again
    with pytest.raises(ElmanError, match="no training state to resume"):
        rundir.lock(tmp_path / "nothing", create=False)
    assert not (tmp_path / "nothing").exists()


def test_two_resumes_started_together_one_runs_one_is_refused(tmp_path):
    """The issue's report: both ran, metrics.jsonl got every row twice, one died mid-checkpoint."""
    tr, va = write_corpus(tmp_path, lines=3000)
    out = tmp_path / "m"
    train(out, dict(train=tr, valid=va, epochs=1, min_improvement=0.0, **SMALL), quiet=True)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    # Six more epochs: long enough that the second starts while the first still runs, however slow the machine.
    cmd = [sys.executable, "-m", "elman", "train", "--out", str(out), "--resume", "--epochs", "7", "--quiet"]
    procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = sorted((p.wait(timeout=120), p.stderr.read()) for p in procs)
    assert [rc for rc, _ in results] == [0, 2], results
    refusal = results[1][1].strip().splitlines()
    assert len(refusal) == 1 and re.search(rf"another elman train is writing to it \(host "
                                           rf"{re.escape(socket.gethostname())}, pid \d+\)", refusal[0])
    holder = int(re.search(r"pid (\d+)", refusal[0]).group(1))
    assert holder in [p.pid for p in procs]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    keys = [(r.get("epoch"), r.get("batch")) for r in rows]
    assert len(keys) == len(set(keys)) and rows[-1]["epoch"] >= 2
