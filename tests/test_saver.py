"""Checkpoints written beside training (training.rundir.Saver): the bytes of
the moment the save was asked for, on disk in the order asked, and a failed
write reported as the one-line error it is, by the run that asked."""
import numpy as np
import pytest

from elman import modelfile as ck
from elman.errors import ElmanError
from elman.modelfile import load_model, prepare_checkpoint
from elman.training import rundir
from elman.training.train import train
from helpers import params, vocab


def test_a_prepared_checkpoint_holds_the_arrays_of_its_moment(tmp_path):
    p = params(0)
    ready = prepare_checkpoint(tmp_path, p, vocab(), {"level": "word"})
    want = {k: v.copy() for k, v in p.items()}
    for v in p.values():
        v += 1                                      # training goes on before the write
    ready.write()
    got = load_model(tmp_path)[0]
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_the_saver_writes_in_order_and_close_waits(tmp_path):
    saver = rundir.Saver()
    last = prepare_checkpoint(tmp_path, params(1), vocab(), {"level": "word"}, slot="last")
    best = prepare_checkpoint(tmp_path, params(1), vocab(), {"level": "word"}, slot="best", model_from="last",
                              model_bytes=last.files[ck.MODEL_FILE])
    saver([last, best])
    saver.close()
    # best was linked to the last one written before it: the order held
    assert (tmp_path / ck.MODEL_FILE).stat().st_ino == (tmp_path / ck.LAST / ck.MODEL_FILE).stat().st_ino
    got = load_model(tmp_path)[0]
    assert all(np.array_equal(got[k], v) for k, v in params(1).items())


def test_a_failed_write_is_raised_by_the_next_wait(tmp_path, monkeypatch):
    def full(*_):
        raise ElmanError(f"{tmp_path}: cannot write a checkpoint there (No space left on device)")
    monkeypatch.setattr(ck, "_commit", full)
    saver = rundir.Saver()
    saver([prepare_checkpoint(tmp_path, params(0), vocab(), {"level": "word"})])
    with pytest.raises(ElmanError, match="No space left"):
        saver.wait()
    saver.close()                                   # reported once


def test_a_run_whose_checkpoint_cannot_be_written_ends_with_that_error(tmp_path, monkeypatch):
    words = np.random.default_rng(0).choice(list("abcdefgh"), size=(300, 6))
    (tmp_path / "t.txt").write_text("\n".join(" ".join(w) for w in words[:250]) + "\n")
    (tmp_path / "v.txt").write_text("\n".join(" ".join(w) for w in words[250:]) + "\n")
    tr, va = str(tmp_path / "t.txt"), str(tmp_path / "v.txt")
    real, calls = ck._commit, []

    def fails_third(ckdir, files):
        calls.append(ckdir)
        if len(calls) == 3:
            raise ElmanError(f"{ckdir}: cannot write a checkpoint there (No space left on device)")
        real(ckdir, files)
    monkeypatch.setattr(ck, "_commit", fails_third)
    with pytest.raises(ElmanError, match="No space left"):
        train(tmp_path / "m", dict(train=tr, valid=va, hidden=8, embed=6, streams=4, steps=10, epochs=2,
                                   checkpoint_every=5), quiet=True)
    assert len(calls) == 3                          # nothing written after the failure
