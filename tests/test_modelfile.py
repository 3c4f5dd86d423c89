"""Checkpoints: exact round trips, refusal of bad files, crash safety (elman.modelfile)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from elman import modelfile as ck
from elman.modelfile import (atomic_write_bytes, atomic_write_json, atomic_write_text, has_model,
                              load_checkpoint, load_model, load_training_state, remove_checkpoints,
                              save_checkpoint)
from elman.data import EOS, Vocab
from elman.errors import ElmanError
from helpers import Dh, V, d, params, save, vocab

def refused(run_dir, fragment, names, slot="best"):
    with pytest.raises(ElmanError) as e:
        load_model(run_dir, slot)
    msg = str(e.value)
    assert "\n" not in msg and fragment in msg, msg
    assert names in msg, msg
    return msg


# -- round trips ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_is_exact(tmp_path, dtype):
    p = params(3, dtype)
    p["Ucls"] = np.arange(6, dtype=dtype).reshape(2, 3)     # extra arrays travel too,
    p["class_of"] = np.arange(V, dtype=np.int64) % 2         # integer ones included
    v = vocab()
    save_checkpoint(tmp_path, p, v, {"level": "word", "hidden": Dh, "best_valid_ppl": None})
    q, w, cfg = load_model(tmp_path)
    assert set(q) == set(p)
    for k in p:
        assert q[k].dtype == p[k].dtype and np.array_equal(q[k], p[k])
    assert w.itos == v.itos and np.array_equal(w.counts, v.counts)
    assert (cfg["format"], cfg["V"], cfg["d"], cfg["Dh"], cfg["dtype"]) == ("elman-2", V, d, Dh, dtype)
    assert cfg["hidden"] == Dh and cfg["best_valid_ppl"] is None
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors", "vocab.txt"]


def test_training_state_round_trip_restores_the_rng(tmp_path):
    rng = np.random.default_rng(11)
    rng.random(5)
    state = {"epoch": 2, "batch": 17, "lr": 0.05, "rng": rng.bit_generator.state}
    h = np.random.default_rng(1).random((5, Dh)).astype("float32")
    save(tmp_path, 1, train_state=state, optimizer_arrays={"h": h, "G.L": np.ones((V, d))}, slot="last")
    cfg, opt = load_training_state(tmp_path)
    assert cfg["train_state"]["batch"] == 17 and np.array_equal(opt["h"], h)
    restored = np.random.default_rng()
    restored.bit_generator.state = cfg["train_state"]["rng"]
    assert np.array_equal(restored.random(4), rng.random(4))
    q, _, _, opt2 = load_checkpoint(tmp_path)
    assert np.array_equal(q["H"], params(1)["H"]) and set(opt2) == {"h", "G.L"}


def test_third_party_reader_needs_only_safetensors_and_json(tmp_path):
    save(tmp_path, 2)
    W = load_file(str(tmp_path / "model.safetensors"))
    itos = (tmp_path / "vocab.txt").read_text("utf-8").split("\n")[:-1]
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["format"] == "elman-2" and len(itos) == cfg["V"] == W["U"].shape[1]
    assert np.array_equal(W["L"], params(2)["L"])


def test_char_level_vocab_with_space(tmp_path):
    v = Vocab.build(list("to be or") + [EOS])
    rng = np.random.default_rng(0)
    n = len(v)
    p = {"L": rng.random((n, d)), "I": rng.random((d, Dh)), "H": rng.random((Dh, Dh)),
         "U": rng.random((Dh, n)), "b1": rng.random(Dh), "b2": rng.random(n)}
    save_checkpoint(tmp_path, p, v, {"level": "char"})
    _, w, cfg = load_model(tmp_path)
    assert w.itos == v.itos and " " in w and cfg["level"] == "char"


def test_best_and_last_are_separate(tmp_path):
    assert not has_model(tmp_path)
    save(tmp_path, 1, slot="last")
    assert has_model(tmp_path)
    msg = refused(tmp_path, "no finished model", str(tmp_path / "last"))
    assert "--model" in msg
    assert load_model(tmp_path, "last")[2]["gen"] == 1
    save(tmp_path, 2)
    assert load_model(tmp_path)[2]["gen"] == 2 and load_model(tmp_path, "last")[2]["gen"] == 1
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    remove_checkpoints(tmp_path)
    assert not has_model(tmp_path) and os.listdir(tmp_path) == ["metrics.jsonl"]


def test_a_write_killed_before_its_commit_leaves_no_model(tmp_path):
    pending = tmp_path / "last" / ".pending"
    pending.mkdir(parents=True)
    (pending / "model.safetensors").write_bytes(b"partial")
    assert not has_model(tmp_path)
    (pending / "COMMIT").write_text('{"files": ["model.safetensors"]}')
    assert has_model(tmp_path)


def test_other_programs_temp_files_are_left_alone(tmp_path):
    (tmp_path / ".curve.png.abc123.tmp").write_bytes(b"being written")
    (tmp_path / ".model.safetensors.x1y2.tmp").write_bytes(b"ours, from a killed write")
    save(tmp_path, 1)
    assert (tmp_path / ".curve.png.abc123.tmp").exists()
    assert not (tmp_path / ".model.safetensors.x1y2.tmp").exists()


def test_optimizer_file_of_an_older_checkpoint_is_dropped(tmp_path):
    save(tmp_path, 1, optimizer_arrays={"h": np.zeros(3)}, slot="last")
    save(tmp_path, 2, slot="last")
    assert not (tmp_path / "last" / "optimizer.safetensors").exists()
    assert load_training_state(tmp_path)[1] == {}


def test_caller_errors_are_caught_before_writing(tmp_path):
    with pytest.raises(ValueError, match="strict JSON"):
        save_checkpoint(tmp_path, params(), vocab(), {"best": float("inf")})
    with pytest.raises(ValueError, match="V"):
        save_checkpoint(tmp_path, params(), vocab(), {"V": 99})
    p = params()
    del p["b1"]
    with pytest.raises(ValueError, match="b1"):
        save_checkpoint(tmp_path, p, vocab(), {})
    with pytest.raises(ElmanError, match="vocab.txt"):
        save_checkpoint(tmp_path, params(), Vocab.build(["x", EOS]), {})
    assert not has_model(tmp_path)


# -- refusals ---------------------------------------------------------------------------------

@pytest.fixture
def model(tmp_path):
    save(tmp_path, 0)
    return tmp_path


def test_missing_and_wrong_directories(tmp_path):
    refused(tmp_path / "nope", "no such model directory", "nope")
    refused(tmp_path, "config.json", str(tmp_path))
    f = tmp_path / "file"
    f.write_text("x")
    refused(f, "not a directory", str(f))


@pytest.mark.parametrize("name", ["model.safetensors", "vocab.txt", "config.json"])
def test_missing_file(model, name):
    (model / name).unlink()
    refused(model, "no such file", name)


# What pickle.dumps({"L": [1.0]}) writes: the loader must refuse it, never unpickle it.
PICKLE = b"\x80\x04\x95\x14\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01L\x94]\x94G?\xf0\x00\x00\x00\x00\x00\x00as."

BAD_TENSOR_FILES = {
    "empty": b"",
    "random": bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)),
    "pickle": PICKLE,
    "huge header": (2**40).to_bytes(8, "little") + b"{}",
    "json": b'{"L": [1, 2, 3]}',
}


@pytest.mark.parametrize("kind", sorted(BAD_TENSOR_FILES) + ["truncated", "zip"])
def test_not_a_safetensors_file(model, kind):
    path = model / "model.safetensors"
    if kind == "truncated":
        data = path.read_bytes()[:-50]
    elif kind == "zip":  # the layout of a torch.save file
        with zipfile.ZipFile(model / "z.zip", "w") as z:
            z.writestr("archive/data.pkl", PICKLE)
        data = (model / "z.zip").read_bytes()
    else:
        data = BAD_TENSOR_FILES[kind]
    path.write_bytes(data)
    refused(model, "safetensors", "model.safetensors")


def test_a_header_length_that_starts_like_a_pickle_is_still_safetensors(tmp_path):
    """A header of 128 + 256k bytes makes a file's first byte 0x80, pickle's
    first byte too: such a file (an optimizer state, one time in 256) loads."""
    from safetensors.numpy import save
    from elman.modelfile import read_safetensors
    arrays = {"h": np.arange(6, dtype=np.float32).reshape(2, 3)}
    pad = next(n for n in range(512) if save(arrays, {"pad": "x" * n})[0] == 0x80)
    path = tmp_path / "optimizer.safetensors"
    path.write_bytes(save(arrays, {"pad": "x" * pad}))
    assert path.read_bytes()[:1] == b"\x80"
    assert np.array_equal(read_safetensors(path)["h"], arrays["h"])


def test_missing_tensor(model):
    p = params(0)
    del p["U"]
    save_file(p, str(model / "model.safetensors"))
    refused(model, "no tensor named U", "model.safetensors")


def test_integer_tensor(model):
    p = params(0)
    p["b1"] = np.zeros(Dh, dtype=np.int32)
    save_file(p, str(model / "model.safetensors"))
    refused(model, "dtype", "model.safetensors")


def test_weights_that_disagree_with_config(model):
    cfg = json.loads((model / "config.json").read_text())
    cfg["Dh"] = Dh + 1
    (model / "config.json").write_text(json.dumps(cfg))
    refused(model, "shape", "config.json")


def test_vocab_that_disagrees_with_weights(model):
    (model / "vocab.txt").write_text((model / "vocab.txt").read_text() + "extra\n")
    refused(model, "V=7", "vocab.txt")


def test_weights_from_another_checkpoint_fail_the_checksum(model):
    save_file(params(5), str(model / "model.safetensors"))
    refused(model, "sha256", "model.safetensors")


def test_model_without_checksums_loads(model):
    # a model written by another program: the three files, no "files" record
    cfg = json.loads((model / "config.json").read_text())
    del cfg["files"]
    (model / "config.json").write_text(json.dumps(cfg))
    save_file(params(5), str(model / "model.safetensors"))
    assert np.array_equal(load_model(model)[0]["L"], params(5)["L"])


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "not valid JSON"),
    ('{"V": 7}', "format"),
    ('["elman-1"]', "format"),
    ('{"format": "elman-0", "V": 7, "d": 3, "Dh": 4}', "elman-0"),
    ('{"format": "elman-1", "V": "7", "d": 3, "Dh": 4}', "'V'"),
    ('{"format": "elman-1", "V": 7, "d": 3, "Dh": 4, "level": "byte"}', "level"),
])
def test_bad_config(model, text, fragment):
    (model / "config.json").write_text(text)
    refused(model, fragment, "config.json")


def test_bad_vocab_file(model):
    (model / "vocab.txt").write_bytes(b"a\n\xff\n")
    refused(model, "UTF-8", "vocab.txt")


# -- atomic writes and crash safety ------------------------------------------------------------

def test_atomic_writes(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "héllo")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    atomic_write_json(tmp_path / "c.json", {"x": [1, 2]})
    assert (tmp_path / "a.txt").read_text("utf-8") == "héllo"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": [1, 2]}
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.bin", "c.json"]


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ElmanError) as e:
        atomic_write_text(blocker / "x.txt", "y")
    assert "\n" not in str(e.value) and str(blocker / "x.txt") in str(e.value)
    with pytest.raises(ElmanError) as e:
        save(blocker / "run")
    assert str(blocker / "run") in str(e.value)


def test_failed_replace_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    def broken(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(ElmanError, match="No space left"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler catches it."""


@pytest.mark.parametrize("slot", ["best", "last"])
def test_crash_at_every_file_operation_leaves_old_or_new(tmp_path, monkeypatch, slot):
    """Interrupt the write of checkpoint 2 at each rename, unlink, rmdir and
    fsync in turn; the checkpoint that loads afterwards is always 1 or 2, whole."""
    names = ("replace", "unlink", "rmdir", "fsync")
    # Power loss is not what this simulates; skipping the real syncs keeps the test fast.
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    real = {n: getattr(os, n) for n in names}
    step, results = 0, set()
    while True:
        run = tmp_path / f"run{step}"
        save(run, 1, optimizer_arrays={"m": np.full(3, 1.0)}, slot=slot)
        counter = {"n": 0}

        def make(name):
            def op(*args, **kw):
                counter["n"] += 1
                if counter["n"] > step:  # once "killed", nothing more happens
                    raise Crash(name)
                return real[name](*args, **kw)
            return op
        for n in names:
            monkeypatch.setattr(os, n, make(n))
        try:
            save(run, 2, optimizer_arrays={"m": np.full(3, 2.0)}, slot=slot)
            crashed = False
        except Crash:
            crashed = True
        finally:
            for n in names:
                monkeypatch.setattr(os, n, real[n])
        p, _, cfg, opt = load_checkpoint(run, slot)
        gen = cfg["gen"]
        assert gen in (1, 2)
        assert np.array_equal(p["L"], params(gen)["L"]) and np.array_equal(opt["m"], np.full(3, float(gen)))
        results.add(gen)
        # the next write finishes or discards the interrupted one and succeeds
        save(run, 3, slot=slot)
        assert load_model(run, slot)[2]["gen"] == 3
        assert not (ck.checkpoint_dir(run, slot) / ".pending").exists()
        if not crashed:
            break
        step += 1
    assert step > 10 and results == {1, 2}, (step, results)   # crashes hit both sides of the commit


WRITER = r"""
import sys, numpy as np
sys.path.insert(0, sys.argv[2])
from helpers import save
gen = 0
while True:
    gen += 1
    save(sys.argv[1], gen, optimizer_arrays={"m": np.full(50_000, float(gen))}, slot="last")
    print(gen, flush=True)
"""


def test_sigkill_during_writes_never_leaves_a_broken_checkpoint(tmp_path):
    """Really kill a process that writes checkpoints in a loop, at varied moments."""
    run = tmp_path / "run"
    here = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    last_seen = 0
    for i in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(run), here],
                                stdout=subprocess.PIPE, env=env, text=True)
        first = proc.stdout.readline()  # at least one checkpoint exists now
        assert first.strip(), "the writer died before its first checkpoint"
        time.sleep(0.005 + 0.011 * i)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        p, _, cfg, opt = load_checkpoint(run, "last")
        gen = cfg["gen"]
        assert gen >= 1 and np.array_equal(p["U"], params(gen)["U"])
        assert np.array_equal(opt["m"], np.full(50_000, float(gen)))
        last_seen = gen
    assert last_seen >= 1
    shutil.rmtree(run)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_model_holding_nan_or_infinity_is_refused(tmp_path, dtype, bad):
    """load_params checks every value: one NaN or infinity among finite ones, or
    huge finite values whose sum overflows (those load), is told apart."""
    from elman.modelfile import load_params
    p = params(1, dtype)
    p["H"] = p["H"].copy()
    p["H"][1, 2] = bad
    save_checkpoint(tmp_path / "bad", p, vocab(), {})
    with pytest.raises(ElmanError, match="tensor H holds NaN or infinite values"):
        load_params(tmp_path / "bad")
    p["H"][...] = np.finfo(dtype).max / 2          # finite, though their sum is not
    save_checkpoint(tmp_path / "big", p, vocab(), {})
    assert np.array_equal(load_params(tmp_path / "big")[0].H, p["H"])


def test_the_best_model_linked_from_last_keeps_its_bytes_when_last_moves_on(tmp_path):
    """At an epoch's end the best model is the last one: its file is linked, not written twice."""
    save(tmp_path, 0, slot="last")
    save(tmp_path, 0, slot="best", model_from="last")
    best, last = tmp_path / ck.MODEL_FILE, tmp_path / ck.LAST / ck.MODEL_FILE
    assert best.stat().st_ino == last.stat().st_ino
    save(tmp_path, 1, slot="last")                          # the next checkpoint replaces last's name only
    assert best.stat().st_ino != last.stat().st_ino
    for slot, gen in (("best", 0), ("last", 1)):
        q, _, _ = load_model(tmp_path, slot)                # checksums checked on load
        assert all(np.array_equal(q[k], v) for k, v in params(gen).items()), slot
    save(tmp_path / "b", 2, slot="best", model_from="last")   # no such slot: written as usual
    q, _, _ = load_model(tmp_path / "b")
    assert all(np.array_equal(q[k], v) for k, v in params(2).items())
