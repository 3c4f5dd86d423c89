"""Dynamic evaluation (elman.inference.dynamic): against an independent
loop (HIPS autograd's gradient of an independent forward pass, one SGD step
a segment), no look-ahead, the model file untouched, every kind of model,
and the command line."""
import hashlib
import json
import math

import autograd
import numpy as np
import pytest

from elman import Params, cli
from elman.model import features
from elman.model.perplexity import stream_losses as static_losses
from elman.inference import dynamic
from elman.inference.engine import batched
from elman.inference.options import DYNAMIC_DEFAULTS
from helpers import ag_direct_loss, write_corpus

V, EOS = 11, 0


def model(direct=0, classes=0, seed=3):
    counts = np.arange(3 * V, 2 * V, -1)
    p = Params.init(V, 4, 6, seed=seed, dtype="float64", classes=classes, counts=counts,
                    direct=direct, direct_order=3)
    rng = np.random.default_rng(seed + 1)
    for a in p.as_dict().values():
        if a.dtype.kind == "f":
            a += rng.normal(scale=0.5, size=a.shape)
    return p


def reference(p, ids, lr, T, decay=0.0, scale=None):
    """The definition, written out: score a segment token by token with the
    weights as they are (autograd's forward pass, not elman's), then
    w <- w - lr * autograd's gradient of the segment's summed loss / s,
    w <- w + decay * (w0 - w), D by plain steps without decay."""
    a = {k: v.copy() for k, v in p.as_dict().items() if v.dtype.kind == "f"}
    a0 = {k: v.copy() for k, v in a.items()}
    x = np.r_[EOS, ids[:-1]]
    h, hist, out = np.zeros((1, p.Dh)), np.array([[-1]]), []
    for s in range(0, len(ids), T):
        xs, ys = x[None, s:s + T], ids[None, s:s + T]
        f = features(p, xs, hist)                   # the hashed offsets: ids only, no weights
        O = f.O.reshape(xs.shape[1], 1, -1)
        Oc = None if f.Oc is None else f.Oc.reshape(xs.shape[1], 1, -1)
        h_start = h
        for t in range(xs.shape[1]):
            one = (O[t:t + 1], None if Oc is None else Oc[t:t + 1], p.class_bounds)
            out.append(ag_direct_loss(a, *one, xs[:, t:t + 1], ys[:, t:t + 1], h))
            h = 1.0 / (1.0 + np.exp(-(h @ a["H"] + a["L"][xs[:, t]] @ a["I"] + a["b1"])))
        g = autograd.grad(ag_direct_loss)(a, O, Oc, p.class_bounds, xs, ys, h_start)
        a = {k: v - lr * g[k] / (1.0 if scale is None or k == "D" else scale[k]) for k, v in a.items()}
        a = {k: v if k == "D" else v + decay * (a0[k] - v) for k, v in a.items()}
        hist = xs[:, -1:]
    return np.array(out).ravel()


@pytest.mark.parametrize("classes", [0, 3])
@pytest.mark.parametrize("T", [1, 4, 7])
def test_stream_equals_the_definition(classes, T):
    p = model(direct=40, classes=classes)
    ids = np.random.default_rng(T).integers(0, V, 23)
    got = dynamic.adapted_stream_losses(p, ids, EOS, lr=0.3, T=T)
    np.testing.assert_allclose(got, reference(p, ids, 0.3, T), rtol=1e-10)
    static = static_losses(p, ids, EOS)
    np.testing.assert_allclose(got[:T], static[:T], rtol=1e-12)   # the first segment: nothing learnt yet
    assert np.abs(got[T:] - static[T:]).max() > 1e-3       # then the weights have moved


@pytest.mark.parametrize("classes", [0, 3])
def test_scaled_steps_with_decay_equal_the_definition(classes):
    p = model(direct=40, classes=classes)
    rng = np.random.default_rng(5)
    scale = {k: rng.uniform(0.5, 2.0, v.shape) for k, v in p.as_dict().items() if v.dtype.kind == "f" and k != "D"}
    ids = rng.integers(0, V, 23)
    got = dynamic.adapted_stream_losses(p, ids, EOS, lr=0.3, T=4, decay=0.2, scale=scale)
    np.testing.assert_allclose(got, reference(p, ids, 0.3, 4, decay=0.2, scale=scale), rtol=1e-10)
    assert np.abs(got - dynamic.adapted_stream_losses(p, ids, EOS, lr=0.3, T=4)).max() > 1e-3


def test_training_scale_is_the_floored_root_of_adagrads_sums(runs):
    from elman import modelfile
    from elman.inference.evaluate import load
    _, out = runs
    p, _, _ = load(out["full"])
    scale, why, positions = dynamic.training_scale(out["full"], p)
    _, _, cfg, G = modelfile.load_checkpoint(out["full"], "last")
    t = cfg["train_state"]["optimizer"]["t"]
    assert t > 1 and positions == cfg["settings"]["streams"] * cfg["settings"]["steps"] > 1
    assert "Adagrad" in why and sorted(scale) == sorted(k for k, v in p.as_dict().items() if v.dtype.kind == "f" and k != "D")
    for k, s in scale.items():
        r = np.sqrt(G[f"G.{k}"] / t)
        np.testing.assert_allclose(s, np.maximum(r, dynamic.FLOOR * r.mean()), rtol=1e-6)
        assert (s > 0).all()


@pytest.mark.parametrize("direct,classes", [(0, 0), (40, 0), (40, 3)])
def test_no_look_ahead(direct, classes):
    """The losses of the first k tokens do not change when the text after them does."""
    p = model(direct=direct, classes=classes)
    rng = np.random.default_rng(0)
    prefix = rng.integers(0, V, 13)
    a = dynamic.adapted_stream_losses(p, np.r_[prefix, rng.integers(0, V, 20)], EOS, lr=0.5, T=5)
    b = dynamic.adapted_stream_losses(p, np.r_[prefix, rng.integers(0, V, 9)], EOS, lr=0.5, T=5)
    assert np.array_equal(a[:13], b[:13])
    assert not np.allclose(a[13:22], b[13:22])


def test_the_callers_weights_do_not_change():
    p = model(direct=40)
    before = {k: v.copy() for k, v in p.as_dict().items()}
    dynamic.adapted_stream_losses(p, np.arange(30) % V, EOS, lr=1.0, T=5)
    dynamic.line_losses(p, [np.array([3, 4, EOS])] * 3, lr=1.0)
    assert all(np.array_equal(v, p.as_dict()[k]) for k, v in before.items())


def test_a_tiny_rate_is_static_evaluation_and_repetition_is_learnt():
    p = model(direct=40)
    ids = np.tile(np.random.default_rng(1).integers(0, V, 30), 4)
    static = static_losses(p, ids, EOS)
    np.testing.assert_allclose(dynamic.adapted_stream_losses(p, ids, EOS, lr=1e-12, T=5), static, rtol=1e-9)
    learnt = dynamic.adapted_stream_losses(p, ids, EOS, lr=0.3, T=5)
    assert learnt[90:].mean() < 0.8 * static[90:].mean()   # the fourth repetition is easier


def test_lines_in_order_each_scored_before_its_step():
    p = model(direct=40)
    rng = np.random.default_rng(2)
    lines = [np.r_[rng.integers(1, V, n), EOS] for n in (4, 0, 6, 3)]
    got = dynamic.line_losses(p, lines, lr=0.4)
    static = batched(p, lines, EOS)
    np.testing.assert_allclose(got[0], static[0], rtol=1e-12)
    q = p.copy()
    for line, losses in zip(lines, got):                   # each line: the stream loop on it alone
        np.testing.assert_allclose(losses, dynamic.adapted_stream_losses(q, line, EOS, lr=0.4, T=len(line)),
                                   rtol=1e-12)
        dynamic.sgd_step(q.as_dict(), _grads(q, line), 0.4)


def _grads(p, line):
    from elman.model import bptt
    x = np.r_[EOS, line[:-1]][None, :]
    return bptt(p, x, line[None, :], np.zeros((1, p.Dh)))[1]


# ------------------------------------------------------------------ the command line

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny models trained with the full, class and sampled softmax (direct connections on)."""
    d = tmp_path_factory.mktemp("dyn")
    tr, va = write_corpus(d, lines=150)
    out = {}
    for kind, extra in [("full", []), ("classes", ["--classes", "3"]), ("sampled", ["--sampled", "5"])]:
        run = d / kind
        assert cli.main(["train", "--train", tr, "--valid", va, "--out", str(run), "--hidden", "8", "--embed", "6",
                         "--batch", "4", "--bptt", "5", "--epochs", "1", "--direct", "0.0005", "--quiet",
                         *extra]) == 0
        out[kind] = run
    return d, out


def _digest(run):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(run.rglob("*")) if f.is_file()}


@pytest.mark.parametrize("kind", ["full", "classes", "sampled"])
def test_eval_and_score_dynamic_leave_the_model_alone(runs, kind, capsys):
    d, out = runs
    run, data = out[kind], str(d / "valid.txt")
    before = _digest(run)
    assert cli.main(["eval", "--model", str(run), "--data", data, "--json"]) == 0
    static = json.loads(capsys.readouterr().out)
    assert cli.main(["eval", "--model", str(run), "--data", data, "--json", "--dynamic", "--bptt", "7"]) == 0
    dyn = json.loads(capsys.readouterr().out)
    # the scaled rule's default rate is per position of a training update
    settings = json.loads((run / "last" / "config.json").read_text())["settings"]
    lr = DYNAMIC_DEFAULTS["scaled"]["lr"] / (settings["streams"] * settings["steps"])
    assert dyn["dynamic"] == {**DYNAMIC_DEFAULTS["scaled"], "lr": lr, "scaled": True, "bptt": 7}
    assert math.isfinite(dyn["perplexity"])
    assert dyn["perplexity"] != static["perplexity"] and dyn["tokens"] == static["tokens"]
    # the direct weights' own rate is used: a different one gives another perplexity
    assert cli.main(["eval", "--model", str(run), "--data", data, "--json", "--dynamic", "--bptt", "7",
                     "--dynamic-direct", "1.5"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert other["dynamic"]["direct_lr"] == 1.5 and other["perplexity"] != dyn["perplexity"]
    # plain SGD steps on request, and where the run's training state is gone
    assert cli.main(["eval", "--model", str(run), "--data", data, "--json", "--dynamic", "--dynamic-plain",
                     "--dynamic-decay", "0"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["dynamic"]["lr"] == DYNAMIC_DEFAULTS["plain"]["lr"] and plain["dynamic"]["decay"] == 0
    assert not plain["dynamic"]["scaled"] and plain["perplexity"] != dyn["perplexity"]
    bare = d / f"{kind}-bare"
    bare.mkdir(exist_ok=True)
    for f in run.iterdir():
        if f.is_file():
            (bare / f.name).write_bytes(f.read_bytes())
    assert cli.main(["eval", "--model", str(bare), "--data", data, "--dynamic"]) == 0
    line = capsys.readouterr().out
    assert f"dynamic lr {DYNAMIC_DEFAULTS['plain']['lr']:g} (plain SGD steps: no training state in" in line
    assert cli.main(["score", "--model", str(run), "--data", data, "--dynamic", "0.05"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("total ") and len(lines) == 31
    assert _digest(run) == before


@pytest.mark.parametrize("args,message", [
    (["--dynamic", "0"], "positive"), (["--dynamic", "-1"], "positive"), (["--dynamic", "x"], "not a number"),
    (["--bptt", "5"], "give --dynamic too"), (["--dynamic", "--bptt", "0"], "positive"),
    (["--dynamic-direct", "0.1"], "give --dynamic too"), (["--dynamic", "--dynamic-direct", "0"], "positive"),
    (["--dynamic-decay", "0.1"], "give --dynamic too"), (["--dynamic-plain"], "give --dynamic too"),
    (["--dynamic", "--dynamic-decay", "1"], "[0, 1)"),
])
def test_bad_dynamic_options_are_one_line(runs, args, message, capsys):
    d, out = runs
    code = cli.main(["eval", "--model", str(out["full"]), "--data", str(d / "valid.txt"), *args]) \
        if args[0] in ("--bptt", "--dynamic-direct", "--dynamic-decay", "--dynamic-plain") else None
    if code is None:
        with pytest.raises(SystemExit) as exc:
            cli.main(["eval", "--model", str(out["full"]), "--data", str(d / "valid.txt"), *args])
        code = exc.value.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_the_cli_and_the_library_read_the_one_table_of_default_rates():
    from elman.cli import inference as cli_inference
    assert cli_inference.DYNAMIC_DEFAULTS is DYNAMIC_DEFAULTS is dynamic.DYNAMIC_DEFAULTS


@pytest.mark.parametrize("direct,classes", [(0, 0), (40, 0), (40, 3)])
def test_bptt_per_position_losses_are_the_forward_passs(direct, classes):
    """Dynamic evaluation scores a segment with the losses of the pass that gives its gradient."""
    from elman.model import bptt, forward_losses
    p = model(direct=direct, classes=classes)
    rng = np.random.default_rng(7)
    x, y = rng.integers(0, V, (3, 6)), rng.integers(0, V, (3, 6))
    h0 = rng.normal(size=(3, p.Dh))
    losses, grads, h = bptt(p, x, y, h0, per_position=True)
    want, h_want = forward_losses(p, x, y, h0)
    assert losses.shape == (3, 6)
    np.testing.assert_allclose(losses, want, rtol=1e-12)
    np.testing.assert_allclose(h, h_want, rtol=1e-12)
    total, grads_sum, _ = bptt(p, x, y, h0)
    assert total == pytest.approx(losses.sum(), rel=1e-12)
    assert all(np.array_equal(np.asarray(grads[k]), np.asarray(grads_sum[k])) for k in grads)
