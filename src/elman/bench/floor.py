"""A training window's least time on this machine: what a row's % of peak could be.

``elman bench --floor`` asks each training row's worker, after its timed
rounds, for the parts of its window that no implementation can leave out,
each timed alone at its best on one thread:

- the matrix products, one by one at their shapes (the recurrence's T
  forward and T backward steps, e I and the three weight gradients, the
  output layer's three products, a class softmax's three for each class
  a window holds), through BLAS with NumPy's cost of a call taken off;
- the optimizer's pass over the entries the window's gradient touches
  (the row's own rule: Adagrad's for the recipe, SGD's for the others),
  a compiled loop that reads and writes each entry once, the gradient made
  in registers;
- the output layer's exponentials and the hidden layer's sigmoids
  (NumPy's exp over (N, width) and (N, Dh));
- with direct connections, their cells: F runs of each position's output
  width read from the table at hashed offsets, then stepped (the
  trainer's compiled loops).

Two floors follow, each with every core busy and nothing else:

    floor at the peak = (FLOPs / one core's peak + passes) / cores
    floor at BLAS's   = max(T forward + T backward steps, (products + passes) / cores)

The first holds for any implementation that makes these products and
passes at these passes' speed; the second for one on this machine's
BLAS. Dropout's masks, the embeddings, the gradient's norm and every
call's own cost are not counted, so both are lower than any step can reach. ``% of peak`` at a
floor is the row's FLOPs over that time, against the run's peak.
"""
from __future__ import annotations

import time
from collections import Counter

import numpy as np
from numba import njit

from elman.bench.machine import best_seconds as _best
from elman.core.classes import word_classes


SHAPE_BUDGET_S = 0.02      # timed repeats of one part stop after this long (at least 3 of them)


def best_seconds(fn, clock=time.perf_counter) -> float:
    """A part's least time (``bench.machine.best_seconds``, ``SHAPE_BUDGET_S`` of repeats)."""
    return _best(fn, clock, SHAPE_BUDGET_S)


def window_products(p, x, y, width_ids=None) -> Counter:
    """The (m, k, n) products of one training window and how often each is
    made: 2·m·k·n FLOPs each, the FLOPs ``bench.speed.matmul_flops``
    counts. ``width_ids``: the sampled softmax's columns (S + 1), else the
    model's own output layer (full, or classes from ``p.class_bounds``)."""
    B, T = x.shape
    N, d, Dh = B * T, p.L.shape[1], p.H.shape[0]
    out = Counter({(B, Dh, Dh): 2 * T})                           # h(t-1) H forward, dz Hᵀ backward
    for shape in ((N, d, Dh), (Dh, N, Dh), (d, N, Dh), (N, Dh, d)):   # e I; dJ/dH, dJ/dI, dJ/de
        out[shape] += 1
    if p.class_bounds is None or width_ids is not None:
        W = p.V if width_ids is None else width_ids
        _output_triple(out, N, Dh, W)
        return out
    bounds = np.asarray(p.class_bounds)
    K = len(bounds) - 1
    _output_triple(out, N, Dh, K)                                 # the class logits
    rows = np.bincount(word_classes(bounds, np.ravel(y)), minlength=K)
    for c in np.flatnonzero(rows):
        _output_triple(out, int(rows[c]), Dh, int(bounds[c + 1] - bounds[c]))
    return out


def _output_triple(out: Counter, m: int, Dh: int, w: int) -> None:
    """z = h U (m,Dh)(Dh,w); dJ/dh = dz Uᵀ (m,w)(w,Dh); dJ/dU = hᵀ dz (Dh,m)(m,w)."""
    for shape in ((m, Dh, w), (m, w, Dh), (Dh, m, w)):
        out[shape] += 1


def product_flops(products: Counter) -> float:
    return float(sum(2.0 * m * k * n * c for (m, k, n), c in products.items()))


def touched_entries(p, x, y, width_ids=None) -> int:
    """Entries of the parameters a window's gradient touches (the optimizer
    reads and writes each): U's and b2's columns of the output ids (a class
    softmax's: every word of each class present, and all of Uc and bc),
    the rows of L of the window's inputs, and all of H, I and b1."""
    Dh, d = p.H.shape[0], p.L.shape[1]
    if width_ids is not None:
        cols = width_ids
    elif p.class_bounds is None:
        cols = p.V
    else:
        bounds = np.asarray(p.class_bounds)
        present = np.unique(word_classes(bounds, np.ravel(y)))
        cols = int((bounds[present + 1] - bounds[present]).sum()) + len(bounds) - 1
    return int(cols * (Dh + 1) + len(np.unique(x)) * d + Dh * Dh + d * Dh + Dh)


def product_seconds(products: Counter, dtype, clock=time.perf_counter) -> dict:
    """Each shape's least time on one BLAS thread, NumPy's cost of a call
    (a 1×1 product's time) taken off."""
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    with threadpool_limits(limits=1, user_api="blas"):
        one = np.ones((1, 1), dtype)
        call = best_seconds(lambda: np.matmul(one, one, out=one), clock)
        times = {}
        for (m, k, n) in products:
            a = rng.standard_normal((m, k)).astype(dtype)
            b = rng.standard_normal((k, n)).astype(dtype)
            c = np.empty((m, n), dtype)
            times[(m, k, n)] = max(0.0, best_seconds(lambda: np.matmul(a, b, out=c), clock) - call)
    return times


@njit(cache=True, nogil=True, error_model="numpy")
def _adagrad_pass(P, G, c, lr, eps):
    """Adagrad's step on every entry, the gradient made in registers (c·P,
    as ``fast.colgrad`` makes dJ/dU's from its factors): P and G read and
    written once, a square root and a division each."""
    for i in range(P.size):
        g = c * P[i]
        a = G[i] + g * g
        G[i] = a
        P[i] -= (g * lr) / (np.sqrt(a) + eps)


@njit(cache=True, nogil=True, error_model="numpy")
def _sgd_pass(P, c):
    """SGD's step on every entry, the gradient made in registers: P read and written once."""
    for i in range(P.size):
        P[i] -= c * P[i]


def pass_seconds(entries: int, N: int, width: int, Dh: int, dtype, adagrad: bool, clock=time.perf_counter) -> dict:
    """The optimizer's pass over ``entries`` (compiled, one thread; no
    gradient array read, so lower than any step that makes the gradient
    first), and NumPy's exp over (N, width) and (N, Dh)."""
    rng = np.random.default_rng(0)
    P = rng.standard_normal(entries).astype(dtype)
    G = np.ones_like(P)
    c, lr, eps = P.dtype.type(1e-6), P.dtype.type(0.1), P.dtype.type(1e-8)
    step = (lambda: _adagrad_pass(P, G, c, lr, eps)) if adagrad else (lambda: _sgd_pass(P, c))
    z, a = rng.standard_normal((N, width)).astype(dtype), rng.standard_normal((N, Dh)).astype(dtype)
    ez, ea = np.empty_like(z), np.empty_like(a)
    return dict(update=best_seconds(step, clock),
                exp=best_seconds(lambda: np.exp(z, out=ez), clock),
                sigmoid=best_seconds(lambda: np.exp(a, out=ea), clock))


def direct_inputs(M: int, F: int, widths, dtype, seed: int = 0) -> tuple:
    """A window's direct cells as the trainer's loops take them: each
    position n (row r = n, in order) reads F runs of widths[n] from a table
    of M entries at offsets drawn uniformly (as the hash makes them) into
    its stretch of a flat buffer of logits. (D, O, flat, order, start,
    width, col) for ``fast.windows.add_rows``; ``kernels_direct.scatter_rows``
    takes the same with at = (start, width, col)."""
    rng = np.random.default_rng(seed)
    width = np.asarray(widths, np.int64)
    O = rng.integers(0, M - int(width.max()) + 1, size=(len(width), F))
    start = np.concatenate([[0], np.cumsum(width)[:-1]])
    zeros = np.zeros(len(width), np.int64)
    return (np.zeros(M, dtype), O, np.zeros(int(width.sum()), dtype), np.arange(len(width)), start, width, zeros)


def direct_seconds(M: int, F: int, widths, dtype, clock=time.perf_counter) -> float:
    """The direct weights' cells of a window (``core.direct``), read into the
    logits and then stepped, by the trainer's compiled loops (one thread)."""
    from elman.fast.kernels_direct import scatter_rows
    from elman.fast.windows import add_rows
    D, O, flat, order, start, width, col = direct_inputs(M, F, widths, dtype)
    at, c = np.stack([start, width, col]), D.dtype.type(-1e-3)
    return (best_seconds(lambda: add_rows(flat, D, O, order, start, width, col), clock)
            + best_seconds(lambda: scatter_rows(D, O, at, flat, c, 0, M), clock))


def row_widths(p, y, width_ids=None) -> np.ndarray:
    """Each position's output units: a class softmax's K + its target's class size, else the width."""
    y = np.ravel(y)
    if width_ids is not None or p.class_bounds is None:
        return np.full(len(y), p.V if width_ids is None else width_ids)
    bounds = np.asarray(p.class_bounds)
    return len(bounds) - 1 + np.diff(bounds)[word_classes(bounds, y)]


def measure(p, windows, width: float, sampled: bool, adagrad: bool, clock=time.perf_counter) -> dict:
    """The mean window's parts over ``windows`` [(x, y), ...], in seconds on
    one thread: its products at BLAS's rate (and its FLOPs), the passes,
    the critical path (T forward and T backward steps). ``width``: the
    output units a position computes (the row's); ``sampled``: they are
    the sampled softmax's columns."""
    n = len(windows)
    B, T = windows[0][0].shape
    Dh = p.H.shape[0]
    width_ids = int(round(width)) if sampled else None
    products = sum((window_products(p, x, y, width_ids) for x, y in windows), Counter())
    times = product_seconds(products, p.H.dtype, clock)
    entries = sum(touched_entries(p, x, y, width_ids) for x, y in windows) // n
    passes = pass_seconds(entries, B * T, max(1, int(round(width))), Dh, p.H.dtype, adagrad, clock)
    if p.D is not None:
        F = int(np.ravel(p.direct_order)[0]) - 1
        widths = np.concatenate([row_widths(p, y, width_ids) for _, y in windows])
        passes["direct"] = direct_seconds(len(p.D), F, widths, p.H.dtype, clock) / n
    return dict(flops=product_flops(products) / n, products_s=sum(times[s] * c for s, c in products.items()) / n,
                critical_s=2 * T * times[(B, Dh, Dh)], passes_s=passes, products=int(sum(products.values())) // n)


def floors(parts: dict, peak: float, cores: int) -> dict:
    """The two floors of a window (the module's text) from ``measure``'s
    parts, ``peak`` the run's matmul peak on ``cores`` (GFLOP/s), and the
    fraction of it each allows."""
    flops, other, peak = parts["flops"], sum(parts["passes_s"].values()), peak * 1e9
    at_peak = (flops / (peak / cores) + other) / cores
    at_blas = max(parts["critical_s"], (parts["products_s"] + other) / cores)
    return dict(floor_peak_s=at_peak, floor_blas_s=at_blas,
                frac_at_floor_peak=flops / at_peak / peak, frac_at_floor_blas=flops / at_blas / peak)


def format_floors(res: dict) -> list:
    """The report's lines for ``res["floors"]`` (``bench.speed``'s result)."""
    if not res.get("floors"):
        return []
    measured = {r["impl"]: r for r in res["rows"] if r["mode"] == "train"}
    cores = next(iter(res["floors"].values()))["cores"]
    lines = [f"a training window's floor on {cores} core{'s' if cores > 1 else ''}: its products at the peak / "
             "at BLAS's rate for their shapes (one thread each), plus the optimizer's pass, exps and sigmoids, "
             "every core busy (bench.floor)",
             f"{'configuration':<20} {'MFLOP':>8} {'products':>9} {'passes':>8} {'critical':>9} "
             f"{'floor ms':>15} {'% peak at floor':>16} {'measured':>9}",
             f"{'':<20} {'':>8} {'core-ms':>9} {'core-ms':>8} {'ms':>9} {'peak / BLAS':>15} "
             f"{'peak / BLAS':>16} {'% peak':>9}"]
    for name, f in res["floors"].items():
        row = measured.get(name)
        blas = f"{100 * f['frac_at_floor_blas']:.1f}%"
        lines.append(f"{name + ' train':<20} {f['flops'] / 1e6:>8.1f} {1e3 * f['products_s']:>9.3f} "
                     f"{1e3 * sum(f['passes_s'].values()):>8.3f} {1e3 * f['critical_s']:>9.3f} "
                     f"{1e3 * f['floor_peak_s']:>7.3f} / {1e3 * f['floor_blas_s']:<5.3f} "
                     f"{100 * f['frac_at_floor_peak']:>7.1f}% / {blas:<6} "
                     f"{100 * row['frac_peak'] if row else float('nan'):>8.1f}%")
    return lines
