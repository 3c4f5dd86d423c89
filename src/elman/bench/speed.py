"""``elman bench``: training and evaluation speed against this machine's limit.

Each implementation (elman, and with ``--vs-torch`` PyTorch eager autograd)
runs in its own fresh worker process, so its peak memory (``ru_maxrss``,
the resident-set high-water mark the kernel keeps, minus the same mark
taken after the imports) is its own, and the two never share BLAS or
OpenMP thread pools.  The parent hands out the timed steps in rounds,
elman then torch then elman ..., so a burst of load from another program
falls on both, and the ratio is the median of the per-round ratios.

A training step is forward, backward and an in-place SGD update, as the
trainer does them (dJ/dL, and under sampled softmax dJ/dU and dJ/db2, as
``SparseGrad`` rows or columns); the recipe's step is the trainer's own
(``elman train``'s optimizer with its clipping, the direct weights' plain
steps scattered into D, the mean over positions), on synthetic word ids drawn from a Zipf
law (the shape of real text, which is what the embedding scatter and the
class softmax see). An evaluation step is one window of a stream evaluated
as ``elman eval`` does it: the state carried from window to window, and
the next window's recurrence run on one core while the others do this
window's output layer (``model.window_losses``); PyTorch's goes window by
window. The FLOP count is that of the matrix products, 2·m·k·n each: per
position 2(d·Dh + Dh² + Dh·V) forward and twice that backward; the peak is
the best float32 square matrix product (numpy's BLAS, all its threads)
measured in this same run (``elman.machine``).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from elman import progress
from elman.bench import floor, scoring
from elman.bench.machine import PEAK_N, blas_info, cpus, kernel_note, matmul_peak
from elman.bench.zipf import zipf_counts
from elman.training.rules import SGD
from elman.core.sampled import Sampler, unigram_proposal

# OpenBLAS's worker threads spin for about 0.1 s after each call before they
# sleep (libgomp's, torch's, likewise): each timed block starts after this
# pause, so no worker is still burning a core that the next one needs, and
# after one untimed step, since the first step after a pause is slower.
SETTLE_S = 0.25
IMPLS = ("elman", "torch")
# ``--one-core``: what a worker's libraries are told (their pools start at import, so in its environment).
ONE_THREAD = {"ELMAN_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class Config:
    V: int = 10000
    d: int = 200
    Dh: int = 200
    B: int = 32
    T: int = 20
    dtype: str = "float32"
    classes: int = 0            # 0: the full softmax
    sampled: int = 0            # S > 0: train with sampled softmax, S ids a window
    direct: int = 0             # M > 0: direct connections of M weights (the "recipe" worker)
    direct_order: int = 3
    dropout: float = 0.0        # > 0: dropout in training (the "recipe" worker)
    seed: int = 0
    batches: int = 4            # distinct synthetic windows, cycled
    one_core: bool = False      # every process on one core, one thread, timed by its CPU time


# -- synthetic data and counting ----------------------------------------------------


def synthetic_batches(cfg: Config):
    """``cfg.batches`` windows (inputs, targets), each (B,T), ids ~ Zipf(1)."""
    counts = zipf_counts(cfg.V)
    rng = np.random.default_rng(cfg.seed)
    ids = rng.choice(cfg.V, size=(cfg.batches, cfg.B, cfg.T + 1), p=counts / counts.sum())
    return [(w[:, :-1].copy(), w[:, 1:].copy()) for w in ids], counts


def matmul_flops(cfg: Config, width: float, train: bool) -> float:
    """FLOPs of the matrix products of one (B,T) window."""
    forward = 2.0 * cfg.B * cfg.T * (cfg.d * cfg.Dh + cfg.Dh * cfg.Dh + cfg.Dh * width)
    return 3 * forward if train else forward


def budget_bytes(cfg: Config, n_params: int, width: float) -> int:
    """Parameters plus the activations of one batch: e, e I + b1, h(0..T), the
    output logits (N, width)."""
    N = cfg.B * cfg.T
    acts = N * cfg.d + N * cfg.Dh + (cfg.T + 1) * cfg.B * cfg.Dh + N * width
    return int((n_params + acts) * np.dtype(cfg.dtype).itemsize)


# -- the worker: one implementation in its own process ------------------------------


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux reports KiB


class _Runner:
    def train_stream(self, windows, lr):
        for x, y in windows:
            yield self.train_step(x, y, lr)


class _ElmanRunner(_Runner):
    def __init__(self, cfg: Config, batches, counts):
        from elman.model import Params
        kw = dict(classes=cfg.classes, counts=counts) if cfg.classes else {}
        self.p = Params.init(cfg.V, cfg.d, cfg.Dh, seed=cfg.seed, dtype=cfg.dtype, direct=cfg.direct,
                             direct_order=cfg.direct_order, **kw)
        self.dropout = cfg.dropout
        self.arrays = self.p.as_dict()
        self.h = np.zeros((cfg.B, cfg.Dh), dtype=cfg.dtype)
        self.h_eval = self.h.copy()
        self.batches = batches
        self.sampler = Sampler(unigram_proposal(counts), cfg.sampled, cfg.seed) if cfg.sampled else None
        self.opt = SGD(self.arrays, lr=0.0)         # the worker's rate comes with each step
        self.recipe = bool(cfg.direct or cfg.dropout)
        if self.recipe:                             # elman train's optimizer, rates and clipping
            from elman.training.state import Settings, make_run_optimizer
            self.opt = make_run_optimizer(Settings(train="", valid=""), self.arrays)
        self.k = 0

    def eval_loss(self, x, y):
        from elman.model import forward_losses
        return float(forward_losses(self.p, x, y, self.h)[0].sum())

    def eval_stream(self, windows):
        from elman.model import window_losses
        for losses, self.h_eval in window_losses(self.p, windows, self.h_eval):
            yield float(losses.sum())

    def train_stream(self, windows, lr):
        """As ``elman train`` steps its windows: on the threads it would, the
        output layer's updates beside the next window where it would
        (``training.cores``)."""
        from types import SimpleNamespace
        from elman.fast import threads
        from elman.training.cores import Overlap, overlaps, window_threads
        run = SimpleNamespace(params=self.p, comm=SimpleNamespace(size=1))
        overlap = Overlap(overlaps(run))
        with threads.using(window_threads(run)), threads.spare(overlap.pool):
            try:
                for x, y in windows:
                    yield self.train_step(x, y, lr, overlap)
            finally:
                overlap.close()

    def train_step(self, x, y, lr, overlap):
        from elman.model import bptt
        self.k += 1
        sampled = (self.sampler.draw(self.k), self.sampler.log_q) if self.sampler else None
        dropout = (self.dropout, (0, self.k)) if self.dropout else None
        if self.recipe:                             # ``training.train``'s step, one process: its own rates
            positions, lr = x.size, self.opt.lr
            scale = 1.0 / positions
        else:
            scale = 1.0
        loss, grads, self.h = bptt(self.p, x, y, self.h, sampled=sampled, sparse=True, dropout=dropout, scale=scale,
                                   deferred=True, ready=overlap.ready(self.opt, lr))     # as the trainer
        if self.recipe and "D" in grads:
            grads["D"] *= self.p.dtype.type(positions)
        self.opt.step(self.arrays, grads, later=overlap.later)
        overlap.start(self.opt)
        return loss

    def widths(self, targets) -> tuple:
        """Output units a position computes, mean over ``targets``: in
        training (the sampled softmax's S + 1 under ``sampled``) and in
        evaluation (the model's own output layer)."""
        from elman.model import layer_for
        y = np.concatenate([t.ravel() for t in targets])
        sampled = (self.sampler.draw(0), self.sampler.log_q) if self.sampler else None
        return tuple(layer_for(self.p, s).units(self.p, y) for s in (sampled, None))


class _TorchRunner(_Runner):
    def __init__(self, cfg: Config, batches, counts):
        import torch
        from elman.model import Params
        from elman.bench.torch_ref import TorchElman, as_tensors
        self.torch, self.cfg = torch, cfg
        self.m = TorchElman(Params.init(cfg.V, cfg.d, cfg.Dh, seed=cfg.seed, dtype=cfg.dtype).as_dict())
        self.batches = [as_tensors(x, y) for x, y in batches]
        self.h = torch.zeros(cfg.B, cfg.Dh)
        self.h_eval = torch.zeros(cfg.B, cfg.Dh)

    def eval_loss(self, x, y):
        losses, _ = self.m.eval_losses(x, y, self.h)
        return float(losses.sum())

    def eval_stream(self, windows):
        for x, y in windows:
            losses, self.h_eval = self.m.eval_losses(x, y, self.h_eval)
            yield float(losses.sum())

    def train_step(self, x, y, lr):
        loss, self.h = self.m.train_step(x, y, self.h, lr)
        return loss

    def widths(self, targets) -> tuple:
        return float(self.cfg.V), float(self.cfg.V)


def worker(impl: str, cfg: Config) -> None:
    """Serve the parent: one JSON line in (a command), one JSON line out."""
    if impl == "torch":
        import elman.bench.torch_ref  # noqa: F401  (the library's own footprint is not the model's)
    import elman.model  # noqa: F401
    base = _maxrss_bytes()
    data, counts = synthetic_batches(cfg)
    runner = (_ElmanRunner if impl == "elman" else _TorchRunner)(cfg, data, counts)
    n_params = sum(int(np.size(v)) for k, v in runner_arrays(runner).items() if k != "class_bounds")
    targets = [y for _, y in data]
    width, eval_width = runner.widths(targets)
    lr = 0.1 / (cfg.B * cfg.T)
    loss0 = runner.eval_loss(*runner.batches[0])              # before any update: a parity check
    k = 0

    def send(**msg):
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    send(loss0=loss0, flops_train=matmul_flops(cfg, width, True), flops_eval=matmul_flops(cfg, eval_width, False),
         budget=budget_bytes(cfg, n_params, max(width, eval_width)), width=width)
    clock = time.process_time if cfg.one_core else time.perf_counter
    for line in sys.stdin:
        cmd, n = line.split()
        n = int(n)
        if cmd == "floor":
            adagrad = getattr(runner.opt, "name", "") == "adagrad"
            send(**floor.measure(runner.p, runner.batches, width, bool(cfg.sampled), adagrad, clock))
            continue
        # One untimed step first: clocks and caches wake up after the pause.
        # Evaluation is a stream that carries the state and may work one
        # window ahead (``window_losses``), so it is given one window more
        # than it runs: each timed step holds one window's work.
        windows = [runner.batches[(k + i) % len(runner.batches)] for i in range(n + 2)]
        k += n + 1
        steps = runner.train_stream(windows, lr) if cmd == "train" else runner.eval_stream(windows)
        loss = next(steps)
        t0 = clock()
        for _ in range(n):
            loss = next(steps)
        seconds = clock() - t0
        steps.close()
        send(seconds=seconds, loss=loss, rss=_maxrss_bytes() - base)


def runner_arrays(runner) -> dict:
    if isinstance(runner, _ElmanRunner):
        return runner.arrays
    return {k: v.detach().numpy() for k, v in runner.m.P.items()}


# -- the parent ----------------------------------------------------------------------


class _Worker:
    def __init__(self, impl: str, cfg: Config):
        self.impl, self.cfg = impl, cfg
        env = {**os.environ, **ONE_THREAD} if cfg.one_core else None
        # Its own process group (start_new_session): Ctrl-C on the terminal stops the parent alone,
        # and the worker ends when its stdin closes with it.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "elman.bench.speed", impl, json.dumps(asdict(cfg))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True, env=env)
        self.info = self._read()
        self.times = {"train": [], "eval": []}
        self.modes = ("train", "eval")
        self.rss = 0

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.impl} bench worker died (exit {self.proc.wait()})")
        return json.loads(line)

    def run(self, cmd: str, n: int) -> float:
        time.sleep(SETTLE_S)
        self.proc.stdin.write(f"{cmd} {n}\n")
        self.proc.stdin.flush()
        msg = self._read()
        self.rss = max(self.rss, msg["rss"])
        return msg["seconds"] / n

    def floor(self) -> dict:
        """This row's window in parts (``bench.floor.measure``)."""
        self.proc.stdin.write("floor 0\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def bench(cfg: Config, steps: int = 20, rounds: int = 5, vs_torch: bool = False, full: bool = True,
          peer: str | None = None, score: bool = True, with_floor: bool = False) -> dict:
    """Run the benchmark: elman with the full softmax (unless not ``full``);
    with ``cfg.classes`` the class softmax too; with ``cfg.sampled``
    sampled-softmax training too; with ``vs_torch`` PyTorch; with ``peer``
    (faster-rnnlm's executable) its training speed after elman's rounds;
    with ``score`` the scoring rows (``bench.scoring``) after them; with
    ``with_floor`` each elman training row's least window (``bench.floor``).
    Returns a JSON-able dict (see ``format_report``)."""
    allowed = os.sched_getaffinity(0)
    if cfg.one_core:                # this process and the workers it starts (they inherit it)
        os.sched_setaffinity(0, {min(allowed)})
    try:
        res = _bench(cfg, steps, rounds, vs_torch, full, peer, with_floor)
        if score:
            words = max(1, steps // rounds) * cfg.B * cfg.T
            res["scoring"] = scoring.bench(cfg, rounds, words, full, ONE_THREAD if cfg.one_core else {})
        return res
    finally:
        os.sched_setaffinity(0, allowed)


def _bench(cfg: Config, steps: int, rounds: int, vs_torch: bool, full: bool, peer: str | None,
           with_floor: bool = False) -> dict:
    per = max(1, steps // rounds)
    plain = {"direct": 0, "dropout": 0.0}
    full_cfg = Config(**{**asdict(cfg), "classes": 0, "sampled": 0, **plain})
    workers = {"elman full": _Worker("elman", full_cfg)} if full or vs_torch else {}
    if cfg.classes:
        workers["elman classes"] = _Worker("elman", Config(**{**asdict(cfg), "sampled": 0, **plain}))
    if cfg.sampled:
        workers["elman sampled"] = _Worker("elman", Config(**{**asdict(cfg), "classes": 0, **plain}))
    if cfg.direct or cfg.dropout:       # every option given, together: a training recipe
        workers["elman recipe"] = _Worker("elman", cfg)
    if vs_torch:
        workers["torch full"] = _Worker("torch", full_cfg)
    if "elman sampled" in workers and not full:     # its evaluation is the full softmax's
        workers["elman sampled"].modes = ("train",)
    steps_all = sum(len(w.modes) * (1 + rounds * per) + 1 for w in workers.values())
    with progress.job("bench", "steps", steps_all) as job:
        for w in workers.values():                      # warm up: caches, pools, page faults
            for mode, n in zip(w.modes, (2, 1)):
                w.run(mode, n)
                job.update(n)
        peaks = []
        for r in range(rounds):
            peaks.append(_peak(cfg.one_core))
            for mode in ("train", "eval"):
                for w in workers.values():
                    if mode in w.modes:
                        w.times[mode].append(w.run(mode, per))
                        job.update(per)
    peak = max(peaks)
    parts = {name: w.floor() for name, w in workers.items() if with_floor and w.impl == "elman"}
    for w in workers.values():
        w.close()
    N = cfg.B * cfg.T
    rows = []
    for name, w in workers.items():
        for mode in w.modes:
            t = float(np.median(w.times[mode]))
            flops = w.info["flops_" + mode]
            rows.append(dict(impl=name, mode=mode, seconds_per_step=t, words_per_s=N / t,
                             gflops=flops / t / 1e9, frac_peak=flops / t / 1e9 / peak,
                             peak_rss_mib=w.rss / 2**20, budget_mib=w.info["budget"] / 2**20,
                             loss0=w.info["loss0"], output_width=w.info["width"]))
    result = dict(config=asdict(cfg), steps_per_round=per, rounds=rounds, peak_gflops=peak,
                  peak_matrix=PEAK_N, blas=blas_info(), blas_note=kernel_note(), cpus=cpus(), rows=rows,
                  ratios={})
    _ratios(result, workers)
    if parts:
        cores = 1 if cfg.one_core else cpus()
        result["floors"] = {name: {**p, **floor.floors(p, peak, cores), "cores": cores}
                            for name, p in parts.items()}
    if peer:
        from elman.bench.peers import faster_rnnlm
        result["peer"] = faster_rnnlm(peer, zipf_counts(cfg.V), cfg.Dh, seed=cfg.seed)
        for r in rows:
            if r["mode"] == "train":
                result["ratios"][f"{r['impl']}/faster-rnnlm train words/s"] = r["words_per_s"] / result["peer"]["words_per_s"]
    return result


def _peak(one_core: bool) -> float:
    """The matmul peak: of every core BLAS uses, or with ``one_core`` of one
    thread timed by CPU time, as the workers are then."""
    if not one_core:
        return matmul_peak()
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="blas"):
        return matmul_peak(clock=time.process_time)


def _ratios(result: dict, workers: dict) -> None:
    """Median over rounds of paired time ratios (same round, same load)."""
    def ratio(slow, fast, mode):
        return float(np.median(np.array(workers[slow].times[mode]) / np.array(workers[fast].times[mode])))

    r = result["ratios"]
    for name, w in workers.items():
        if len(w.modes) == 2:
            r[f"{name}: eval/train words/s"] = float(np.median(np.array(w.times["train"]) / np.array(w.times["eval"])))
    if "torch full" in workers and "elman full" in workers:
        for mode in ("train", "eval"):
            r[f"elman/torch {mode} words/s"] = ratio("torch full", "elman full", mode)
    if "elman full" not in workers:
        return
    if "elman classes" in workers:
        r["classes/full train words/s"] = ratio("elman full", "elman classes", "train")
        r["classes/full eval words/s"] = ratio("elman full", "elman classes", "eval")
    if "elman sampled" in workers:
        r["sampled/full train words/s"] = ratio("elman full", "elman sampled", "train")
    if "elman recipe" in workers:
        r["recipe/full train words/s"] = ratio("elman full", "elman recipe", "train")
        r["recipe/full eval words/s"] = ratio("elman full", "elman recipe", "eval")


def format_report(res: dict) -> str:
    c = res["config"]
    sampled = [f"sampled softmax, S={c['sampled']} (its eval: the full softmax)"] if c.get("sampled") else []
    recipe = [] if not (c.get("direct") or c.get("dropout")) else [
        "recipe: " + " + ".join(
            ([f"{c['classes']} classes"] if c["classes"] else []) + ([f"sampled S={c['sampled']}"] if c["sampled"] else [])
            + ([f"direct M={c['direct']} order {c['direct_order']}"] if c["direct"] else [])
            + ([f"dropout {c['dropout']:g}"] if c["dropout"] else []))]
    soft = ", ".join(["full softmax"] + ([f"{c['classes']} classes"] if c["classes"] else []) + sampled + recipe)
    lines = [f"elman bench: V={c['V']} d={c['d']} Dh={c['Dh']} B={c['B']} T={c['T']} {c['dtype']}, {soft}; "
             + ("one core, one thread, CPU time; " if c.get("one_core") else f"{res['cpus']} CPUs; ")
             + f"{res['rounds']} rounds x {res['steps_per_round']} steps, medians",
             f"BLAS: {res['blas']}",
             *([res["blas_note"]] if res.get("blas_note") else []),
             f"matmul peak: {res['peak_gflops']:.1f} GFLOP/s (float32 {res['peak_matrix']}^2 product, best in run)",
             f"{'configuration':<20} {'words/s':>9} {'GFLOP/s':>8} {'% peak':>7} {'peak RSS MiB':>13} "
             f"{'x budget':>9}"]
    for r in res["rows"]:
        lines.append(f"{r['impl'] + ' ' + r['mode']:<20} {r['words_per_s']:>9.0f} {r['gflops']:>8.1f} "
                     f"{100 * r['frac_peak']:>6.1f}% {r['peak_rss_mib']:>13.1f} "
                     f"{r['peak_rss_mib'] / r['budget_mib']:>8.2f}x")
    if res.get("peer"):
        lines.append(f"{'faster-rnnlm train':<20} {res['peer']['words_per_s']:>9.0f} {'':>8} {'':>7}   "
                     f"(hierarchical softmax, 1 thread, {res['peer']['seconds']:g} s of training: "
                     f"{res['peer']['command']})")
    lines.append("budget = parameters + activations of one batch; peak RSS above the worker's own after imports")
    loss0 = {r["impl"]: r["loss0"] for r in res["rows"]}
    if "torch full" in loss0 and "elman full" in loss0:
        same = abs(loss0["torch full"] - loss0["elman full"]) <= 1e-4 * abs(loss0["elman full"])
        lines.append(f"same model: first-batch loss elman {loss0['elman full']:.4f}, "
                     f"torch {loss0['torch full']:.4f} ({'agree' if same else 'DIFFER'})")
    for k, v in res["ratios"].items():
        lines.append(f"{k}: {v:.2f}x")
    lines += floor.format_floors(res)
    lines += scoring.format_rows(res.get("scoring", []), res["peak_gflops"])
    return "\n".join(lines)


if __name__ == "__main__":   # a worker process (``_Worker``)
    worker(sys.argv[1], Config(**json.loads(sys.argv[2])))
