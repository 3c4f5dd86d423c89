"""``elman bench`` works and reports what it says (functional only: no test
asserts a time or a speed)."""
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from elman import cli
from elman.bench.speed import Config, _ElmanRunner, bench, budget_bytes, format_report, matmul_flops, synthetic_batches
from elman.core.classes import class_bounds

TINY = dict(V=40, d=3, Dh=4, B=2, T=3)


def test_flop_count_and_budget_follow_the_shapes():
    cfg = Config(V=10000, d=200, Dh=200, B=32, T=20)
    forward = 2 * 640 * (200 * 200 + 200 * 200 + 200 * 10000)
    assert matmul_flops(cfg, cfg.V, train=False) == forward
    assert matmul_flops(cfg, cfg.V, train=True) == 3 * forward
    n_params = 10000 * 200 + 200 * 200 * 2 + 200 * 10000 + 200 + 10000
    acts = 640 * 200 + 640 * 200 + 21 * 32 * 200 + 640 * 10000
    assert budget_bytes(cfg, n_params, cfg.V) == 4 * (n_params + acts)


def test_synthetic_ids_are_zipfian_and_classes_narrow_the_output():
    cfg = Config(V=1000, B=8, T=50, classes=20)
    batches, counts = synthetic_batches(cfg)
    assert len(batches) == cfg.batches and all(x.shape == y.shape == (8, 50) for x, y in batches)
    assert (np.diff(counts) <= 0).all()
    assert np.array_equal(batches[0][0][:, 1:], batches[0][1][:, :-1])      # targets are the next inputs
    ids = np.concatenate([x.ravel() for x, _ in batches])
    assert (ids < 10).mean() > 0.3                                          # frequent words dominate
    targets = [y for _, y in batches]
    classes, full = _ElmanRunner(cfg, batches, counts), _ElmanRunner(Config(V=1000, B=8, T=50), batches, counts)
    assert np.array_equal(classes.p.class_bounds, class_bounds(counts, 20))
    width, eval_width = classes.widths(targets)
    assert 20 < width == eval_width < 1000 and full.widths(targets) == (1000, 1000)


def check_result(res, impls):
    assert res["peak_gflops"] > 0 and res["blas"] and res["cpus"] >= 1
    names = [(r["impl"], r["mode"]) for r in res["rows"]]
    assert names == [(i, m) for i in impls for m in ("train", "eval")]
    for r in res["rows"]:
        assert r["words_per_s"] > 0 and r["gflops"] > 0 and r["frac_peak"] > 0
        assert r["peak_rss_mib"] >= 0 and r["budget_mib"] > 0
        assert r["words_per_s"] == pytest.approx(TINY["B"] * TINY["T"] / r["seconds_per_step"])
    json.dumps(res)                                                         # JSON-able as it stands


def test_bench_full_classes_and_sampled_in_one_run():
    res = bench(Config(**TINY, classes=4, sampled=6), steps=2, rounds=2, score=False)
    check_result(res, ["elman full", "elman classes", "elman sampled"])
    assert {"classes/full train words/s", "sampled/full train words/s",
            "elman full: eval/train words/s"} <= set(res["ratios"])
    rows = {(r["impl"], r["mode"]): r for r in res["rows"]}
    assert rows["elman classes", "train"]["output_width"] < 40 == rows["elman full", "train"]["output_width"]
    assert rows["elman sampled", "train"]["output_width"] == 7          # S ids and the target
    # the sampled model is the full-softmax model: same start, same exact first loss
    assert rows["elman sampled", "eval"]["loss0"] == rows["elman full", "eval"]["loss0"]
    text = format_report(res)
    for word in ("matmul peak", "elman full train", "elman classes eval", "elman sampled train", "words/s",
                 "% peak", "BLAS", "S=6"):
        assert word in text


def test_bench_command_prints_json_and_rejects_bad_sizes(capsys):
    assert cli.main(["bench", "--V", "30", "--d", "2", "--Dh", "3", "--B", "2", "--T", "2",
                     "--steps", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["config"]["V"] == 30 and res["rounds"] == 1 and res["rows"][0]["impl"] == "elman full"
    assert [r["impl"] for r in res["scoring"]] == ["full", "full +direct", "classes K=3", "classes K=3 +direct"]
    assert cli.main(["bench", "--V", "30", "--classes", "31"]) == 2
    assert "more than the 30 words" in capsys.readouterr().err
    r = subprocess.run([sys.executable, "-m", "elman", "bench", "--B", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--B" in r.stderr


def test_vs_torch_without_torch_is_one_line(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    assert cli.main(["bench", "--V", "30", "--vs-torch"]) == 2
    assert "needs PyTorch" in capsys.readouterr().err


def test_vs_torch_runs_the_same_model():
    pytest.importorskip("torch", reason="PyTorch is optional (pip install 'elman[bench]')")
    res = bench(Config(**TINY), steps=2, rounds=2, vs_torch=True, score=False)
    check_result(res, ["elman full", "torch full"])
    loss = {r["impl"]: r["loss0"] for r in res["rows"]}
    assert loss["torch full"] == pytest.approx(loss["elman full"], rel=1e-5)
    assert "elman/torch train words/s" in res["ratios"] and "(agree)" in format_report(res)


def test_kernel_note_only_for_avx2_kernels_on_an_avx512_cpu():
    from elman.bench.machine import kernel_note
    avx512 = "flags : fpu sse2 avx2 fma avx512f avx512dq avx512bw avx512vl"
    note = kernel_note("Haswell", avx512, "Haswell")
    assert "OPENBLAS_CORETYPE=Haswell" in note and "SkylakeX" in note
    assert kernel_note("Haswell", avx512, "") and "because" not in kernel_note("Haswell", avx512, "")
    assert kernel_note("SkylakeX", avx512, "") is None
    assert kernel_note("Haswell", "flags : fpu sse2 avx2 fma", "Haswell") is None


def test_bench_a_recipe_with_direct_connections_and_dropout(capsys):
    """--direct and --dropout add one worker with every option given, beside today's full softmax."""
    assert cli.main(["bench", "--V", "40", "--d", "3", "--Dh", "4", "--B", "2", "--T", "3", "--steps", "2",
                     "--rounds", "2", "--sampled", "6", "--direct", "0.001", "--direct-order", "4",
                     "--dropout", "0.25", "--json", "--no-scoring"]) == 0
    res = json.loads(capsys.readouterr().out)
    impls = [r["impl"] for r in res["rows"] if r["mode"] == "train"]
    assert impls == ["elman full", "elman sampled", "elman recipe"]
    assert res["config"]["direct"] == 1000 and "recipe/full train words/s" in res["ratios"]
    rows = {(r["impl"], r["mode"]): r for r in res["rows"]}
    # direct connections start at zero: the recipe's model starts as the full softmax's
    assert rows["elman recipe", "eval"]["loss0"] == rows["elman full", "eval"]["loss0"]
    assert "direct M=1000 order 4 + dropout 0.25" in format_report(res)
    assert cli.main(["bench", "--V", "40", "--direct", "0.00001"]) == 2
    assert "fewer than the 40 words" in capsys.readouterr().err


def test_corpus_bench_runs_cold_then_warm_and_reports(tmp_path):
    from elman.bench import corpus

    assert corpus.parse_size("10M") == 10_000_000 and corpus.parse_size("2.5k") == 2500
    with pytest.raises(ValueError):
        corpus.parse_size("ten")
    res = corpus.bench_corpus([30_000], tmp_path)
    [row] = res["rows"]
    text = (tmp_path / "train-30000.txt").read_text()
    tokens = len(text.split()) + text.count("\n")
    assert abs(tokens - 30_000) < 300 and row["bytes"] == len(text)
    assert row["cold"]["build_mtok_s"] > 0 and row["warm"]["build_mtok_s"] is None   # warm: from the cache
    assert row["cold"]["seconds"] > 0 and row["warm"]["seconds"] > 0 and row["warm"]["rss_mb"] > 0
    valid = (tmp_path / "valid-2000.txt").read_text()
    types = set(text.split()) | {"<eos>"}
    listing = sum(len(t) + 1 for t in types)
    counts_entry = 4096 + listing + -listing % 8 + 8 * len(types)
    ids_entries = 2 * 4096 + 2 * tokens + 2 * (len(valid.split()) + valid.count("\n"))   # uint16
    assert row["cache_bytes"] == ids_entries + counts_entry
    assert row["sweep_release"]["rss"] > 0 and "bytes/token" in corpus.format_report(res)
    before = (tmp_path / "train-30000.txt").stat().st_mtime_ns
    corpus.synthetic_corpus(tmp_path / "train-30000.txt", 30_000)                   # made once, then reused
    assert (tmp_path / "train-30000.txt").stat().st_mtime_ns == before


def test_bench_recipe_is_elman_trains_defaults(capsys):
    """--recipe fills in train's defaults: the classes, the table size, the order, the dropout rate;
    with --sampled S, the full softmax trained sampled."""
    from elman.training.state import DIRECT, default_classes
    tiny = ["bench", "--V", "40", "--d", "3", "--Dh", "4", "--B", "2", "--T", "3", "--steps", "2", "--rounds", "1",
            "--recipe", "--json", "--no-scoring"]
    assert cli.main(tiny) == 0
    c = json.loads(capsys.readouterr().out)["config"]
    assert (c["classes"], c["sampled"], c["direct"], c["direct_order"], c["dropout"]) == \
        (default_classes(40), 0, DIRECT * 1e6, 3, 0.25)
    assert cli.main(tiny + ["--sampled", "10"]) == 0
    c = json.loads(capsys.readouterr().out)["config"]
    assert (c["classes"], c["sampled"]) == (0, 10)
    assert cli.main(["bench", "--V", "40", "--recipe", "--classes", "4", "--sampled", "10"]) == 2
    assert "--classes or --sampled" in capsys.readouterr().err


def test_bench_recipe_takes_trains_bptt_unless_given(capsys):
    """T is part of the recipe: --recipe without --T benches elman train's
    --bptt; without --recipe the bench keeps its own T (the tables of docs/benchmarks/speed.md)."""
    from elman.cli.tools import BENCH_T
    from elman.training.state import default
    tiny = ["--V", "40", "--d", "3", "--Dh", "4", "--B", "2", "--steps", "2", "--rounds", "1", "--json", "--no-scoring"]
    for extra, T in ((["--recipe"], default("steps")), ([], BENCH_T), (["--recipe", "--T", "3"], 3)):
        assert cli.main(["bench", *tiny, *extra]) == 0
        assert json.loads(capsys.readouterr().out)["config"]["T"] == T
    assert default("steps") != BENCH_T


# -- the scoring rows ---------------------------------------------------------------------

def test_scoring_rows_for_each_output_layer_with_and_without_direct_connections():
    """One stream as elman eval scores it: full softmax (a sampled-trained model's), classes, each
    with and without direct connections; the figures agree with each other and with the models."""
    from elman.bench import scoring
    from elman.model.perplexity import CLASS_WINDOW, WINDOW
    cfg = Config(**TINY, classes=4, direct=200)
    res = bench(cfg, steps=2, rounds=2)
    rows = res["scoring"]
    assert [(r["impl"], r["classes"], r["direct"]) for r in rows] == [
        ("full", 0, 0), ("full +direct", 0, 200), ("classes K=4", 4, 0), ("classes K=4 +direct", 4, 200)]
    d, Dh, V = TINY["d"], TINY["Dh"], TINY["V"]
    for r in rows:
        assert r["mode"] == "score" and r["words_per_s"] > 0 and r["gflops"] > 0
        assert r["words_per_s"] == pytest.approx(r["tokens_per_round"] / r["seconds_per_round"])
        assert r["gflops"] == pytest.approx(r["flops_per_token"] * r["words_per_s"] / 1e9)
        window = CLASS_WINDOW if r["classes"] else WINDOW
        assert r["tokens_per_round"] == max(TINY["B"] * TINY["T"], scoring.WINDOWS * window)
        assert r["tokens"] == window + 2 * r["tokens_per_round"]         # the untimed window, then 2 rounds
        assert 0 < r["mean_loss"] < np.log(V) + 1
    full, classes = rows[0], rows[2]
    assert abs(full["mean_loss"] - np.log(V)) < 0.5                    # a random model's softmax: near uniform
    assert full["flops_per_token"] == 2 * (d * Dh + Dh * Dh + Dh * V)
    assert 2 * (d * Dh + Dh * Dh + Dh * 4) < classes["flops_per_token"] < full["flops_per_token"]
    text = format_report(res)
    for r in rows:
        assert f"score {r['impl']}" in text
    assert "scores through the full softmax" in text and "tokens/round" in text


def test_scoring_rows_take_the_defaults_and_leave_out_the_full_softmax_with_no_full():
    from elman.bench import scoring
    from elman.training.state import DIRECT_PER_WORD, default_classes
    K = default_classes(TINY["V"])
    assert [name for name, _, _ in scoring.configurations(Config(**TINY), full=False)] == \
        [f"classes K={K}", f"classes K={K} +direct"]
    rows = scoring.bench(Config(**TINY, one_core=True), rounds=1, words=6, full=False)
    assert [r["impl"] for r in rows] == [f"classes K={K}", f"classes K={K} +direct"]
    assert rows[1]["direct"] == DIRECT_PER_WORD * TINY["V"] and all(r["words_per_s"] > 0 for r in rows)  # train's
