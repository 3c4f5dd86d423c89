"""``elman bench --processes N``: N MPI processes of one thread against one process of N threads.

Both run the trainer's update on the same global batch of B synthetic
Zipf streams: ``bptt`` on the process's share of the streams, the gradient
exchange (``training.gradsync``), Adagrad. Each is one MPI job kept alive
for the whole bench (``mpiexec -n 1`` with N threads, ``mpiexec -n N`` with
one thread each); the parent hands the timed steps out in alternating
rounds, after a pause each, so a burst of load from another program falls
on both, and the ratio is the median of the per-round ratios. While one
job runs, the other sleeps (its rank 0 on stdin, the rest in a sleeping
poll): MPI's blocking calls would spin and take the cores.

From the figures it measures (one machine's compute time per update at B
streams, the bytes each process puts into the all-reduce and the all-gather)
``model`` predicts the words/s of N such machines, each with B streams
(the global batch B·N), on a network of a given bandwidth and latency.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from elman import progress
from elman.bench.speed import SETTLE_S, Config, synthetic_batches
from elman.training.gradsync import local_costs

# Networks of the model: (name, bytes/s, seconds of latency per message step).
NETWORKS = (("10 Gbit/s", 10e9 / 8, 20e-6), ("100 Gbit/s", 100e9 / 8, 5e-6))
MACHINES = (1, 2, 4, 8, 16, 32, 64)


def worker(cfg: Config) -> None:
    """One process of a bench job: rank 0 reads "train n" lines, every rank steps."""
    from elman.model import Params
    from elman.core.sampled import Sampler, unigram_proposal
    from elman.training.distributed import connect
    from elman.training.state import Settings, make_run_optimizer

    comm = connect()
    windows, counts = synthetic_batches(cfg)
    part = comm.part(cfg.B)
    kw = dict(classes=cfg.classes, counts=counts) if cfg.classes else {}
    p = Params.init(cfg.V, cfg.d, cfg.Dh, seed=cfg.seed, dtype=cfg.dtype, direct=cfg.direct,
                    direct_order=cfg.direct_order, **kw)
    # elman train's optimizer: Adagrad at its default rate and clipping, plain SGD for D.
    s = Settings(train="", valid="", classes=cfg.classes, sampled=cfg.sampled, dropout=cfg.dropout,
                 direct=cfg.direct / 1e6, direct_order=cfg.direct_order, seed=cfg.seed)
    opt = make_run_optimizer(s, p.as_dict())
    sampler = Sampler(unigram_proposal(counts), cfg.sampled, cfg.seed) if cfg.sampled else None
    h = np.zeros((cfg.B // comm.size, cfg.Dh), p.dtype)
    comm.calibrate()
    comm.share(p, opt)
    params = p.as_dict()

    def step(k, deferred=comm.deferred):
        nonlocal h
        x, y = windows[k % len(windows)]
        h = train_update(p, params, opt, comm, x[part], y[part], h, cfg, sampler, part, deferred)

    k = 0
    while True:
        line = sys.stdin.readline() if comm.writer else None
        n = comm.on_writer(lambda: int(line.split()[1]) if line and line.strip() else 0)
        if n == 0:
            return
        step(k, deferred=False)     # untimed: wakes clocks and caches; D's ids and rows, for the model
        before = comm.stats() or {"updates": 0, "seconds": 0.0, "waited": 0.0}
        t0 = time.perf_counter()
        for i in range(n):
            step(k + 1 + i)
        seconds = time.perf_counter() - t0
        k += n + 1
        after = comm.stats() or before
        if comm.writer:
            sizes = {k: after.get(k, 0) for k in ("allreduce_bytes", "allgather_bytes", "dense_bytes",
                                                   "sparse_bytes", "sparse_dense_bytes", "sparse")}
            spent = {key: after[key] * after["updates"] - before[key] * before["updates"]
                     for key in ("seconds", "waited")}
            sys.stdout.write(json.dumps({"seconds": seconds, "exchange_s": spent["seconds"],
                                         "waited_s": spent["waited"], **sizes}) + "\n")
            sys.stdout.flush()


def train_update(p, params, opt, comm, x, y, h, cfg: Config, sampler, part: slice, deferred: bool):
    """The trainer's update (``training.train._train_epoch``) on this process's
    streams of a synthetic window: the gradients, their exchange, the step.
    Direct connections read no history before the window (the trainer's
    first window of an epoch). ``deferred``: D's gradient as the scatter
    the trainer uses where it can (``bptt``), or as the ids and rows that
    go between machines."""
    from elman.model import bptt
    positions = cfg.B * cfg.T
    sampled = (sampler.draw(opt.t), sampler.log_q) if sampler else None
    dropout = (cfg.dropout, (cfg.seed, opt.t), (part.start, cfg.B)) if cfg.dropout else None
    history = np.full((len(x), max(p.order - 2, 0)), -1, np.int64) if p.order else None
    loss, grads, h = bptt(p, x, y, h, sampled=sampled, sparse=True, dropout=dropout, scale=1.0 / positions,
                          history=history, deferred=deferred)
    if "D" in grads:
        grads["D"] *= p.dtype.type(positions)
    grads, loss, _ = comm.allreduce_grads(grads, loss, (False,))
    comm.step(opt, params, grads)
    return h


class _Job:
    def __init__(self, processes: int, threads: int, cfg: Config):
        mpiexec = Path(sys.executable).parent / "mpiexec"      # the mpich wheel's; else the one on PATH
        if not mpiexec.exists():
            mpiexec = shutil.which("mpiexec") or "mpiexec"
        env = {**os.environ, "ELMAN_THREADS": str(threads)}
        self.proc = subprocess.Popen([str(mpiexec), "-n", str(processes), sys.executable, "-m",
                                      "elman.bench.parallel", json.dumps(asdict(cfg))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     start_new_session=True)     # Ctrl-C stops the parent alone (speed._Worker)
        self.rounds = []

    def run(self, n: int) -> dict:
        time.sleep(SETTLE_S)
        self.proc.stdin.write(f"train {n}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a bench job died (exit {self.proc.wait()})")
        msg = {**json.loads(line), "n": n}
        self.rounds.append(msg)
        return msg

    def close(self) -> None:
        self.proc.stdin.write("stop 0\n")
        self.proc.stdin.close()
        self.proc.wait()


def bench(cfg: Config, processes: int, steps: int = 20, rounds: int = 5) -> dict:
    per = max(1, steps // rounds)
    one, many = _Job(1, processes, cfg), _Job(processes, 1, cfg)
    try:
        with progress.job("bench", "steps", 2 * (2 + rounds * per)) as job:
            one.run(2), many.run(2)                         # warm up: pools, page faults, calibration
            job.update(4)
            for _ in range(rounds):
                one.run(per), many.run(per)
                job.update(2 * per)
    finally:
        one.close(), many.close()
    words = cfg.B * cfg.T

    def med(job, key):
        return float(np.median([r[key] / r["n"] for r in job.rounds[1:]]))

    res = {"config": asdict(cfg), "processes": processes, "rounds": rounds, "steps_per_round": per,
           "one_update_s": med(one, "seconds"), "many_update_s": med(many, "seconds"),
           "exchange_s": med(many, "exchange_s"), "waited_s": med(many, "waited_s"),
           **{k: v for k, v in many.rounds[-1].items() if k.endswith("_bytes") or k == "sparse"},
           "ratio": float(np.median([a["seconds"] / b["seconds"] for a, b in zip(one.rounds[1:], many.rounds[1:])]))}
    res["one_words_s"], res["many_words_s"] = words / res["one_update_s"], words / res["many_update_s"]
    res["gamma"], res["per_id"] = local_costs()
    sizes = (res["dense_bytes"], res["sparse"], (res["gamma"], res["per_id"]))
    res["model"] = model(res["one_update_s"], words, *sizes)
    res["exchange_dominates_below_B"] = dominant_batch(res["one_update_s"], cfg.B, *sizes)
    return res


def exchange_seconds(N: int, dense: float, sparse: dict, bandwidth: float, latency: float,
                     local: tuple = (0.0, 0.0)) -> float:
    """An update's exchange on N machines: Rabenseifner's all-reduce,
    2(N-1)/N·D/W + 2·log2(N)·α, of the dense bytes D and of each sparse
    gradient densified; the others' (ids, rows) all-gathered, (N-1)·g/W +
    log2(N)·α, g their bytes on one machine (``sparse``: name -> (g, its
    dense bytes, its ids on one machine)). Each costs its passes on the
    machine too (``local``: gradsync's measured gamma and per_id): a dense
    one three over D, a gathered one three over the N parts' bytes, every
    id through an index. Each sparse gradient goes the cheaper way, as
    ``training.gradsync``'s cost model chooses."""
    if N == 1:
        return 0.0
    gamma, per_id = local
    steps = math.ceil(math.log2(N))
    total, gathered = 2 * (N - 1) / N * dense / bandwidth + 2 * steps * latency, False
    for g, as_dense, ids in sparse.values():
        reduce = 2 * (N - 1) / N * as_dense / bandwidth + 3 * gamma * as_dense
        gather = (N - 1) * g / bandwidth + 3 * N * (gamma * g + per_id * ids)
        total, gathered = total + min(reduce, gather), gathered or gather < reduce
    return total + (steps * latency if gathered else 0.0)


def model(compute_s: float, words: int, dense: float, sparse: dict, local: tuple = (0.0, 0.0)) -> list:
    """Predicted words/s for N machines on each network: N·words / (compute + exchange)."""
    rows = []
    for N in MACHINES:
        row = {"N": N}
        for name, bandwidth, latency in NETWORKS:
            row[name] = N * words / (compute_s + exchange_seconds(N, dense, sparse, bandwidth, latency, local))
        rows.append(row)
    return rows


def dominant_batch(compute_s: float, B: int, dense: float, sparse: dict, local: tuple = (0.0, 0.0),
                   N: int = 64) -> dict:
    """Per network: the streams a machine below which the exchange takes longer
    than the compute, on N machines. Compute scales with B (measured at B),
    the dense bytes do not, a process's sparse rows grow with B (at most)."""
    out = {}
    for name, bandwidth, latency in NETWORKS:
        def exchange(b):
            scaled = {k: (g * b / B, d, i * b / B) for k, (g, d, i) in sparse.items()}
            return exchange_seconds(N, dense, scaled, bandwidth, latency, local)
        out[name] = next((b for b in range(1, 100 * B) if compute_s * b / B >= exchange(b)), None)
    return out


def format_report(res: dict) -> str:
    c, n = res["config"], res["processes"]
    return "\n".join([
        f"elman bench --processes {n}: V={c['V']} d={c['d']} Dh={c['Dh']} B={c['B']} T={c['T']}"
        f"{' sampled S=' + str(c['sampled']) if c['sampled'] else ''}{' classes K=' + str(c['classes']) if c['classes'] else ''}"
        f"{' direct M=' + str(c['direct']) + ' order ' + str(c['direct_order']) if c['direct'] else ''}"
        f"{' dropout ' + format(c['dropout'], 'g') if c['dropout'] else ''}; {res['rounds']} rounds x "
        f"{res['steps_per_round']} updates, medians",
        f"1 process x {n} threads: {res['one_words_s']:8.0f} words/s  ({res['one_update_s'] * 1e3:.1f} ms an update)",
        f"{n} processes x 1 thread: {res['many_words_s']:8.0f} words/s  ({res['many_update_s'] * 1e3:.1f} ms an "
        f"update; the exchange {res['exchange_s'] * 1e3:.2f} ms, of which {res['waited_s'] * 1e3:.2f} ms "
        f"waiting for the slower process)",
        f"{n}x1 / 1x{n}: {res['ratio']:.3f} (median of per-round ratios); the exchange is "
        f"{res['exchange_s'] / res['many_update_s']:.1%} of an update of {n}x1",
        f"per update and process: all-reduce {res['allreduce_bytes'] / 1e6:.3f} MB, all-gather (received) "
        f"{res['allgather_bytes'] / 1e6:.3f} MB; sparse, one process's (ids, rows) / dense: " + ", ".join(
            f"{k} {g / 1e6:.3f}/{d / 1e6:.3f} MB" for k, (g, d, _) in res["sparse"].items()),
        f"this machine's passes: {res['gamma'] * 1e12:.0f} ps a byte streaming, {res['per_id'] * 1e9:.1f} ns "
        f"more an id through an index",
        f"model, N machines like this one, B={c['B']} streams each, words/s = N*B*T / (compute + exchange(N)):",
        "  N  " + "".join(f"{name:>14}" for name, _, _ in NETWORKS),
        *(f"{row['N']:3d}  " + "".join(f"{row[name]:14.0f}" for name, _, _ in NETWORKS) for row in res["model"]),
        "on 64 machines the exchange takes longer than the compute below B = " + ", ".join(
            f"{b} streams a machine ({name})" for name, b in res["exchange_dominates_below_B"].items())])


if __name__ == "__main__":
    worker(Config(**json.loads(sys.argv[1])))
