"""``elman bench --floor``: a window's parts are the ones the FLOP count
counts, and the floors follow from them (functional: no test asserts a time)."""
import json

import numpy as np
import pytest

from elman import cli
from elman.bench import floor
from elman.bench.speed import Config, _ElmanRunner, format_report, matmul_flops, synthetic_batches


def runner(**kw):
    cfg = Config(V=300, d=6, Dh=5, B=4, T=7, **kw)
    batches, counts = synthetic_batches(cfg)
    return cfg, _ElmanRunner(cfg, batches, counts)


@pytest.mark.parametrize("kw", [{}, {"classes": 12}, {"sampled": 20}])
def test_a_windows_products_are_the_flops_the_bench_counts(kw):
    cfg, r = runner(**kw)
    x, y = r.batches[0]
    width = r.widths([y])[0]
    products = floor.window_products(r.p, x, y, int(round(width)) if cfg.sampled else None)
    assert floor.product_flops(products) == pytest.approx(matmul_flops(cfg, width, train=True), rel=1e-12)
    assert products[(cfg.B, cfg.Dh, cfg.Dh)] == 2 * cfg.T                  # the recurrence's steps, both ways
    if cfg.classes:         # the class logits' three, and three for each class the targets fall in
        present = len(np.unique(np.searchsorted(r.p.class_bounds, y.ravel(), side="right") - 1))
        assert sum(products.values()) == 2 * cfg.T + 4 + 3 + 3 * present


def test_touched_entries_are_the_columns_of_the_classes_present_and_the_input_rows():
    cfg, r = runner(classes=12)
    p, (x, y) = r.p, r.batches[0]
    word_class = np.repeat(np.arange(12), np.diff(p.class_bounds))
    columns = np.isin(word_class, word_class[y.ravel()]).sum() + 12          # their words, and every class
    dense = cfg.Dh * cfg.Dh + cfg.d * cfg.Dh + cfg.Dh
    assert floor.touched_entries(p, x, y) == columns * (cfg.Dh + 1) + len(np.unique(x)) * cfg.d + dense
    full = runner()[1]
    assert floor.touched_entries(full.p, x, y) == 300 * (cfg.Dh + 1) + len(np.unique(x)) * cfg.d + dense
    assert floor.touched_entries(full.p, x, y, 21) == 21 * (cfg.Dh + 1) + len(np.unique(x)) * cfg.d + dense
    widths = floor.row_widths(p, y)
    assert np.array_equal(widths, 12 + np.diff(p.class_bounds)[word_class[y.ravel()]])


def test_the_direct_pass_reads_and_steps_the_runs_it_names():
    """``direct_inputs`` laid out for the trainer's own loops: each position's F runs of its width."""
    from elman.fast.kernels_direct import scatter_rows
    from elman.fast.windows import add_rows
    D, O, flat, order, start, width, col = floor.direct_inputs(50, 2, [5, 2], np.float32, seed=1)
    D[:] = np.random.default_rng(1).standard_normal(50).astype(np.float32)
    add_rows(flat, D, O, order, start, width, col)
    (a, b), (c, d) = O
    assert np.array_equal(flat[:5], D[a:a + 5] + D[b:b + 5])
    assert np.array_equal(flat[5:], D[c:c + 2] + D[d:d + 2])
    want = D.copy()
    for n, (s, w) in enumerate(zip(start, width)):
        for o in O[n]:
            want[o:o + w] -= np.float32(0.5) * flat[s:s + w]
    scatter_rows(D, O, np.stack([start, width, col]), flat, np.float32(-0.5), 0, 50)
    assert np.array_equal(D, want)
    assert floor.direct_seconds(50, 2, [5, 2], np.float32) > 0


def test_the_update_passes_are_the_rules_steps():
    P = np.random.default_rng(2).standard_normal(1000).astype(np.float32)
    G = np.full_like(P, 0.5)
    c, lr, eps = np.float32(0.01), np.float32(0.1), np.float32(1e-8)
    want, wantG = P.copy(), G.copy()
    wantG += (c * P) ** 2
    want -= (c * P * lr) / (np.sqrt(wantG) + eps)
    floor._adagrad_pass(P, G, c, lr, eps)
    np.testing.assert_allclose(P, want, rtol=1e-6)
    np.testing.assert_allclose(G, wantG, rtol=1e-6)
    Q = want.copy()
    floor._sgd_pass(Q, c)
    np.testing.assert_allclose(Q, want * (1 - c), rtol=1e-6)


def test_the_floors_from_their_parts():
    parts = dict(flops=3e9, products_s=0.02, critical_s=0.004, passes_s={"update": 0.002, "exp": 0.0})
    f = floor.floors(parts, peak=300.0, cores=2)
    assert f["floor_peak_s"] == pytest.approx((3e9 / 150e9 + 0.002) / 2)     # 11 ms
    assert f["floor_blas_s"] == pytest.approx(0.011)
    assert f["frac_at_floor_peak"] == pytest.approx(3e9 / 0.011 / 300e9)
    # a critical path longer than the shared work is the floor
    f = floor.floors({**parts, "critical_s": 0.05}, peak=300.0, cores=2)
    assert f["floor_blas_s"] == 0.05 and f["frac_at_floor_blas"] == pytest.approx(0.2)


def test_bench_floor_times_each_training_row(capsys):
    assert cli.main(["bench", "--V", "60", "--d", "3", "--Dh", "4", "--B", "2", "--T", "3", "--steps", "2",
                     "--rounds", "2", "--classes", "5", "--direct", "0.001", "--no-scoring", "--floor",
                     "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["floors"]) == {"elman full", "elman classes", "elman recipe"}
    rows = {r["impl"]: r for r in res["rows"] if r["mode"] == "train"}
    for name, f in res["floors"].items():
        assert f["flops"] == pytest.approx(rows[name]["gflops"] * rows[name]["seconds_per_step"] * 1e9)
        # products this small may take no longer than NumPy's call, which is taken off
        assert f["products_s"] >= 0 and f["critical_s"] >= 0 and f["cores"] == res["cpus"]
        assert all(t > 0 for t in f["passes_s"].values())
        assert f["floor_peak_s"] >= f["flops"] / (res["peak_gflops"] * 1e9)
        assert f["floor_blas_s"] > 0 and f["frac_at_floor_peak"] <= 1
    assert "direct" in res["floors"]["elman recipe"]["passes_s"]
    assert "direct" not in res["floors"]["elman classes"]["passes_s"]
    text = format_report(res)
    assert "a training window's floor" in text and "elman recipe train" in text.split("floor")[-1]


def test_floor_is_refused_beside_the_benches_without_training_rows(capsys):
    for other in (["--corpus", "1000"], ["--processes", "2"]):
        assert cli.main(["bench", "--floor", *other]) == 2
        assert "--floor times the training rows" in capsys.readouterr().err
