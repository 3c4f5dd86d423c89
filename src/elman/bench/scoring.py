"""``elman bench``'s scoring rows: words/s of one stream scored as ``elman
eval`` scores it, for each output layer, with and without direct
connections.

Scoring is what a model does most after training (eval, score, n-best
lists, interpolation), and it is one stream: h0 = 0, the state carried
from window to window, exact normalised probabilities
(``model.perplexity.stream_window_losses``, eval's own path, with its
window and the next window's recurrence beside this one's output layer).
The models: the full softmax (a model trained with sampled softmax is one,
and scores through it: its row is this one's), and the class softmax of
the bench's ``--classes`` K or else the defaults' (``default_classes``);
each without and with the direct connections of the bench's ``--direct``
or else of ``elman train``'s defaults for V (``Settings.fit_vocabulary``).
Random weights (speed needs no training), the text drawn from the bench's
Zipf law.

All the models live in one worker process of their own (the bench's
one-core environment and affinity when ``--one-core``). A round scores as
many tokens as a round of the training rows trains, and at least
``WINDOWS`` of the model's eval windows (so that the window pipeline
runs); after an untimed window, the rounds go model after model, so a
change of load hits each alike, and a row is the median over rounds.
Each row says its mean loss (nats a token) over everything it scored:
the numbers were computed, and a random model's full softmax gives about
ln V.
FLOPs: the matrix products of a scored token, 2(d·Dh + Dh² + Dh·units),
units the output layer's mean logits a token (``OutputLayer.units``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict

import numpy as np

from elman.bench.zipf import zipf_counts

WINDOWS = 8             # eval windows a round scores at least


def configurations(cfg, full: bool = True) -> list:
    """(name, K classes or 0, M direct weights or 0) of each scoring row."""
    from elman.training.state import Settings
    s = Settings(train="", valid="", classes=cfg.classes or None,
                 direct=cfg.direct / 1e6 if cfg.direct else None, direct_order=cfg.direct_order)
    s.fit_vocabulary(cfg.V)
    layers = ([("full", 0)] if full else []) + [(f"classes K={s.classes}", s.classes)]
    return [(name + (" +direct" if M else ""), K, M) for name, K in layers for M in (0, s.direct_size)]


def build(cfg, K: int, M: int):
    """(p, counts): the model of a row and the Zipf counts its text is drawn from."""
    from elman.model import Params
    counts = zipf_counts(cfg.V)
    p = Params.init(cfg.V, cfg.d, cfg.Dh, seed=cfg.seed, dtype=cfg.dtype, classes=K, counts=counts, direct=M,
                    direct_order=cfg.direct_order)
    return p, counts


def _zipf(counts, n: int, rng) -> np.ndarray:
    return rng.choice(len(counts), size=n, p=counts / counts.sum())


def flops_per_token(cfg, p, ids) -> float:
    from elman.model import layer_for
    return 2.0 * (cfg.d * cfg.Dh + cfg.Dh * cfg.Dh + cfg.Dh * layer_for(p).units(p, ids))


def worker(cfg, rounds: int, words: int, full: bool) -> list:
    """Time the scoring rows in this process, rounds of at least ``words``
    tokens (see the module's docstring)."""
    from elman.model.perplexity import stream_window_losses, window_of
    rng = np.random.default_rng(cfg.seed)
    clock = time.process_time if cfg.one_core else time.perf_counter
    rows = []
    for name, K, M in configurations(cfg, full):
        p, counts = build(cfg, K, M)
        window = window_of(p, None)
        first = _zipf(counts, window, rng)
        rows.append(dict(name=name, classes=K, direct=M, p=p, ids=_zipf(counts, max(words, WINDOWS * window), rng),
                         losses=[np.concatenate(list(stream_window_losses(p, first, 0)))], times=[],
                         flops=flops_per_token(cfg, p, first)))
    for _ in range(rounds):
        for r in rows:
            t0 = clock()
            r["losses"].append(np.concatenate(list(stream_window_losses(r["p"], r["ids"], 0))))
            r["times"].append(clock() - t0)
    out = []
    for r in rows:
        t = float(np.median(r["times"]))
        losses = np.concatenate(r["losses"])
        out.append(dict(impl=r["name"], mode="score", classes=r["classes"], direct=r["direct"],
                        tokens_per_round=len(r["ids"]), seconds_per_round=t, words_per_s=len(r["ids"]) / t,
                        gflops=r["flops"] * len(r["ids"]) / t / 1e9, flops_per_token=r["flops"],
                        mean_loss=float(losses.mean()), tokens=int(losses.size)))
    return out


def bench(cfg, rounds: int, words: int, full: bool = True, env: dict | None = None) -> list:
    """The scoring rows, timed in a worker process of their own with
    ``env`` added to its environment (the bench's one-core settings)."""
    env = {**os.environ, **(env or {})}
    spec = json.dumps(dict(cfg=asdict(cfg), rounds=rounds, words=words, full=full))
    done = subprocess.run([sys.executable, "-m", "elman.bench.scoring", spec], capture_output=True, text=True,
                          env=env, start_new_session=True)
    if done.returncode:
        raise RuntimeError(f"the scoring bench worker failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def format_rows(rows: list, peak_gflops: float) -> list:
    """The report's lines of the scoring rows."""
    if not rows:
        return []
    lines = ["scoring: one stream as elman eval scores it (carried state, exact probabilities), median of rounds",
             f"{'configuration':<28} {'words/s':>9} {'GFLOP/s':>8} {'% peak':>7} {'tokens/round':>13} "
             f"{'mean loss':>10}"]
    for r in rows:
        lines.append(f"{'score ' + r['impl']:<28} {r['words_per_s']:>9.0f} {r['gflops']:>8.1f} "
                     f"{100 * r['gflops'] / peak_gflops:>6.1f}% {r['tokens_per_round']:>13,} {r['mean_loss']:>10.3f}")
    if any(r["classes"] == 0 for r in rows):
        lines.append("a model trained with sampled softmax scores through the full softmax: its rows are 'full'")
    return lines


if __name__ == "__main__":   # the worker process (``bench``): the bench's Config as a namespace
    from types import SimpleNamespace
    spec = json.loads(sys.argv[1])
    print(json.dumps(worker(SimpleNamespace(**spec["cfg"]), spec["rounds"], spec["words"], spec["full"])))
