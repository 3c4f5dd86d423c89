"""Mikolov's RNNLM model files, against numbers the real ``rnnlm`` binary
(the Cantab 0.4b float fork) wrote: the fixtures in fixtures/rnnlm are its
models (``rnnlm-text.model``, ``rnnlm-binary.model``, trained on 1,800 KJV
lines with 40 words and <unk>, hidden 12, 5 classes) and its ``-test`` and
``-nbest`` outputs, on those models and on ``elman-model.rnnlm``, what
``elman export --rnnlm`` wrote for ``elman-model``. The binary computes exp
approximately (fastexp.h), so its perplexities differ from the exact ones
by a little: under 0.5% is the bound; the measured difference is ~0.2%."""
from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from elman.errors import ElmanError
from elman.interop import rnnlm, rnnlm_file
from elman.modelfile import load_params

FIX = Path(__file__).parent / "fixtures" / "rnnlm"
RNNLM_BIN = "/work/peers/bin/rnnlm"


def elman(*args) -> str:
    done = subprocess.run([sys.executable, "-m", "elman", *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def rnnlm_ppl(text: str) -> float:
    return float(re.search(r"PPL net: ([\d.]+)", text).group(1))


def elman_ppl(model) -> float:
    return float(re.search(r"perplexity ([\d.]+)", elman("eval", "--model", model, "--data", FIX / "test.txt")).group(1))


@pytest.mark.parametrize("name", ["rnnlm-text", "rnnlm-binary"])
def test_import_equals_rnnlm_test(name, tmp_path):
    out = tmp_path / "m"
    elman("import", "--rnnlm", FIX / f"{name}.model", out)
    theirs = rnnlm_ppl((FIX / f"{name}.test.out").read_text())
    ours = elman_ppl(out)
    assert abs(ours / theirs - 1) < 0.005, (ours, theirs)


def test_classes_are_rnnlm_s_own():
    """RNNLM recomputes the classes from the counts when it loads a model;
    the reader does the same, and gets the column the binary wrote."""
    for name in ("rnnlm-text", "rnnlm-binary"):
        m = rnnlm_file.read(FIX / f"{name}.model")
        column = [int(line.split()[3]) for line in
                  (FIX / f"{name}.model").read_bytes().decode("latin-1").split("Vocabulary:\n")[1].split("\n")
                  [:len(m.words)]]
        assert m.classes.tolist() == column
        assert m.K == 5 and m.syn0.shape == (12, len(m.words) + 12)


def test_text_and_binary_read_alike(tmp_path):
    """The binary model written out as text (elman's writer) reads back to the same numbers."""
    m = rnnlm_file.read(FIX / "rnnlm-binary.model")
    m.old_classes = 0
    (tmp_path / "t").write_bytes(rnnlm_file.write_text(m))
    back = rnnlm_file.read(tmp_path / "t")
    for k in ("syn0", "syn1", "hidden", "classes", "counts"):
        np.testing.assert_array_equal(getattr(back, k), getattr(m, k))
    assert back.words == m.words


def test_export_is_what_the_binary_read(tmp_path):
    """``elman export --rnnlm`` writes, byte for byte, the file whose
    ``rnnlm -test`` and ``-nbest`` outputs are recorded; those equal elman's
    own numbers, and the file imported back is the model again."""
    elman("export", "--model", FIX / "elman-model", "--rnnlm", tmp_path / "x.rnnlm")
    assert (tmp_path / "x.rnnlm").read_bytes() == (FIX / "elman-model.rnnlm").read_bytes()
    ours = elman_ppl(FIX / "elman-model")
    assert abs(rnnlm_ppl((FIX / "elman-model.test.out").read_text()) / ours - 1) < 0.005
    elman("import", "--rnnlm", tmp_path / "x.rnnlm", tmp_path / "back")
    assert elman_ppl(tmp_path / "back") == pytest.approx(ours, rel=2e-4)
    # -nbest: each hypothesis's log10 probability, the state carried from each
    # utterance's first hypothesis, as ``elman score --nbest --carry``
    theirs = [float(x) for x in (FIX / "elman-model.nbest.out").read_text().splitlines()
              if re.fullmatch(r"-[\d.]+", x)]
    lines = elman("score", "--model", FIX / "elman-model", "--data", FIX / "nbest.txt", "--nbest", "--carry")
    mine = [float(x) for x in lines.splitlines()[:len(theirs)]]
    assert len(theirs) == 40
    assert abs(sum(mine) / sum(theirs) - 1) < 0.005
    assert np.corrcoef(mine, theirs)[0, 1] > 0.999


def test_the_function_is_kept_exactly(tmp_path):
    """Export then import: the same log-probabilities to float32 rounding
    (h' = 1 - h both ways, the unit that stays at 1 carrying b1 and b2)."""
    from elman.model import forward_losses
    p, vocab, _ = load_params(FIX / "elman-model")
    back, vocab2, _ = rnnlm.to_elman(rnnlm_file.read(FIX / "elman-model.rnnlm"), "x")
    ids = np.random.default_rng(0).integers(0, p.V, (3, 30))
    remap = np.array([vocab2.stoi[w] for w in vocab.itos])
    a, _ = forward_losses(p, ids[:, :-1], ids[:, 1:], np.zeros((3, p.Dh), p.dtype))
    b, _ = forward_losses(back, remap[ids[:, :-1]], remap[ids[:, 1:]], np.zeros((3, back.Dh), back.dtype))
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


@pytest.mark.skipif(not Path(RNNLM_BIN).exists(), reason="the rnnlm binary is not on this machine")
def test_with_the_binary(tmp_path):
    """Where the binary is at hand: a full-softmax model too, exported and run;
    and one with direct connections trained with --direct-hash rnnlm."""
    from elman.core.params import Params
    from elman.modelfile import save_checkpoint
    p, vocab, _ = load_params(FIX / "elman-model")
    full = Params(p.L, p.I, p.H, p.U, p.b1, p.b2)
    save_checkpoint(tmp_path / "full", full.as_dict(), vocab, {"level": "word"})
    elman("export", "--model", tmp_path / "full", "--rnnlm", tmp_path / "full.rnnlm")
    shutil.copy(FIX / "test.txt", tmp_path / "test.txt")
    out = subprocess.run([RNNLM_BIN, "-rnnlm", "full.rnnlm", "-test", "test.txt"], cwd=tmp_path,
                         capture_output=True, text=True).stdout
    assert abs(rnnlm_ppl(out) / elman_ppl(tmp_path / "full") - 1) < 0.005
    text = (FIX / "test.txt").read_text().splitlines()
    (tmp_path / "train.txt").write_text("\n".join(text[:40]) + "\n")
    (tmp_path / "valid.txt").write_text("\n".join(text[40:]) + "\n")
    elman("train", "--train", tmp_path / "train.txt", "--valid", tmp_path / "valid.txt", "--out", tmp_path / "me",
          "--hidden", 6, "--embed", 4, "--epochs", 1, "--direct", 0.001, "--direct-hash", "rnnlm", "--sampled", 0,
          "--batch", 4)
    elman("export", "--model", tmp_path / "me", "--rnnlm", tmp_path / "me.rnnlm")
    out = subprocess.run([RNNLM_BIN, "-rnnlm", "me.rnnlm", "-test", "test.txt"], cwd=tmp_path,
                         capture_output=True, text=True).stdout
    assert abs(rnnlm_ppl(out) / elman_ppl(tmp_path / "me") - 1) < 0.005


def _damaged(tmp_path, name, change) -> Path:
    data = (FIX / name).read_bytes()
    path = tmp_path / "bad.model"
    path.write_bytes(change(data))
    return path


@pytest.mark.parametrize("name,change,message", [
    ("rnnlm-text.model", lambda d: d[:len(d) // 2], r"bad.model:\d+: the file ends in 'Weights 0->1' \(\d+ of 648"),
    ("rnnlm-text.model", lambda d: d.replace(b"version: 10", b"version: 11"), r"bad.model:1: version 11"),
    ("rnnlm-text.model", lambda d: d.replace(b"compression layer size: 0", b"compression layer size: 5"),
     r"bad.model:15: a compression layer"),
    ("rnnlm-text.model", lambda d: d.replace(b"\nWeights 1->2:\n", b"\nWeights 1->2:\nx0.5\n", 1),
     r"bad.model:\d+: 'x0.5' is not a number \(in 'Weights 1->2'\)"),
    ("rnnlm-binary.model", lambda d: d[:-100], r"bad.model: the file ends in 'Weights 1->2' .*truncated"),
    ("rnnlm-binary.model", lambda d: d + b"\0\0\0\0", r"4 bytes after the model's last number"),
    ("rnnlm-text.model", lambda d: d.split(b"Vocabulary:")[0], r"no 'Vocabulary:' line"),
])
def test_bad_files(tmp_path, name, change, message):
    path = _damaged(tmp_path, name, change)
    with pytest.raises(ElmanError, match=message):
        rnnlm_file.read(path)
    done = subprocess.run([sys.executable, "-m", "elman", "import", "--rnnlm", path, tmp_path / "out"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()                  # nothing half-written


def unzipped(name, tmp_path) -> Path:
    """A fixture stored gzipped (the binary's 1M direct weights are mostly zeros)."""
    path = tmp_path / name
    path.write_bytes(gzip.decompress((FIX / f"{name}.gz").read_bytes()))
    return path


@pytest.mark.parametrize("name", ["rnnme-text", "rnnme-binary"])
def test_rnnme_import_equals_rnnlm_test(name, tmp_path):
    """An RNNME model (``-direct 1 -direct-order 3``): its direct connections
    keep RNNLM's hashing, and elman's perplexity is the binary's; read with
    no direct connections it is not."""
    path = unzipped(f"{name}.model", tmp_path)
    elman("import", "--rnnlm", path, tmp_path / "m")
    p, _, cfg = load_params(tmp_path / "m")
    assert cfg["direct_hash"] == "rnnlm" and p.direct_hash == "rnnlm" and p.order == 3 and p.D.size == 10 ** 6
    theirs = rnnlm_ppl((FIX / f"{name}.test.out").read_text())
    ours = elman_ppl(tmp_path / "m")
    assert abs(ours / theirs - 1) < 0.005, (ours, theirs)
    m = rnnlm_file.read(path)
    m.direct = np.zeros(0, np.float32)
    elman("import", "--rnnlm", _written(tmp_path / "plain.model", m), tmp_path / "plain")
    assert abs(elman_ppl(tmp_path / "plain") / theirs - 1) > 0.02


def without_unk(tmp_path) -> Path:
    """rnnme-text with its <unk> renamed: <unk> in the text is out of RNNLM's vocabulary."""
    text = unzipped("rnnme-text.model", tmp_path).read_text(encoding="latin-1")
    path = tmp_path / "nounk.model"
    path.write_text(text.replace("\t<unk>\t", "\txxunk\t", 1), encoding="latin-1")
    return path


def _written(path: Path, m) -> Path:
    m.old_classes = int(m.header.get("old classes", 0))
    path.write_bytes(rnnlm_file.write_text(m))
    return path


def test_rnnme_export_is_what_the_binary_read(tmp_path):
    """A model trained with ``--direct-hash rnnlm`` (elman-rnnme: the fixture
    README's command) exports, byte for byte, the file whose ``rnnlm -test``
    is recorded; that equals elman's perplexity, which the direct weights
    move far; the file imported back is the model again."""
    elman("export", "--model", FIX / "elman-rnnme", "--rnnlm", tmp_path / "x.rnnlm")
    assert (tmp_path / "x.rnnlm").read_bytes() == (FIX / "elman-rnnme.rnnlm").read_bytes()
    m = rnnlm_file.read(tmp_path / "x.rnnlm")
    assert m.direct.size == 2000 and m.order == 3 and m.words[0] == "</s>"
    ours = elman_ppl(FIX / "elman-rnnme")
    assert abs(rnnlm_ppl((FIX / "elman-rnnme.test.out").read_text()) / ours - 1) < 0.005
    elman("import", "--rnnlm", tmp_path / "x.rnnlm", tmp_path / "back")
    assert elman_ppl(tmp_path / "back") == pytest.approx(ours, rel=2e-4)
    m.direct[...] = 0
    elman("import", "--rnnlm", _written(tmp_path / "zero.rnnlm", m), tmp_path / "zero")
    assert elman_ppl(tmp_path / "zero") > 1.5 * ours


def test_export_keeps_rnnlm_hashed_ids_or_refuses():
    """RNNLM's hashing hashes word indices: a model whose <eos> is not id 0 is refused."""
    p, vocab, _ = load_params(FIX / "elman-rnnme")
    assert vocab.eos_id == 0 and p.direct_hash == "rnnlm"
    from elman.data.vocab import Vocab
    swapped = Vocab([vocab.itos[1], vocab.itos[0], *vocab.itos[2:]])
    with pytest.raises(ElmanError, match="<eos> as id 0"):
        rnnlm.from_elman(p, swapped)


def test_imported_model_exports_to_onnx(tmp_path):
    """An imported RNNLM model is an elman model: its ONNX graph gives its
    numbers, from the starting state the metadata holds (the file's saved
    state, float32 exactly)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import json
    import onnx
    from elman.model import forward_losses, initial_state
    elman("import", "--rnnlm", FIX / "rnnlm-text.model", tmp_path / "m")
    elman("export", "--model", tmp_path / "m", "--onnx", tmp_path / "m.onnx")
    p, vocab, _ = load_params(tmp_path / "m")
    meta = {m.key: m.value for m in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    h0 = np.array([json.loads(meta["h_start"])], np.float32)
    np.testing.assert_array_equal(h0, initial_state(p, 1))
    np.testing.assert_allclose(h0[0], 1 - rnnlm_file.read(FIX / "rnnlm-text.model").hidden, atol=6e-8)
    ids = np.array([[vocab.eos_id] + vocab.encode("and the <unk> of god .".split()).tolist()])
    lp, _ = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"ids": ids[:, :-1], "h0": h0})
    ref, _ = forward_losses(p, ids[:, :-1], ids[:, 1:], h0)
    np.testing.assert_allclose(-lp[0, np.arange(ids.shape[1] - 1), ids[0, 1:]], ref[0], atol=1e-5)


def test_export_refuses_elman_direct_connections(tmp_path):
    """RNNLM reads only its own hashing of direct connections: one line, no file."""
    from helpers import random_model
    from elman.data.vocab import Vocab
    from elman.modelfile import save_checkpoint
    words = "<eos> <unk> a b c".split()
    save_checkpoint(tmp_path / "m", random_model(V=5, d=3, Dh=4, dtype="float32", direct=64).as_dict(),
                    Vocab(words), {"level": "word"})
    done = subprocess.run([sys.executable, "-m", "elman", "export", "--model", tmp_path / "m",
                           "--rnnlm", tmp_path / "x.rnnlm"], capture_output=True, text=True)
    assert done.returncode == 2 and "direct connections" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.rnnlm").exists()


def test_a_vocabulary_without_unk_keeps_rnnlms_rule_both_ways(tmp_path):
    """An RNNME model whose vocabulary lacks <unk> (rnnme-text's, renamed):
    elman's <unk> is RNNLM's -1, out of its vocabulary (its direct features
    stop there: config "direct_oov"), and export --rnnlm leaves it out
    again, so the file is the original's vocabulary and computes elman's numbers."""
    elman("import", "--rnnlm", without_unk(tmp_path), tmp_path / "m")
    p, vocab, cfg = load_params(tmp_path / "m")
    assert cfg["direct_oov"] == p.direct_oov == vocab.unk_id == p.V - 1
    elman("export", "--model", tmp_path / "m", "--rnnlm", tmp_path / "back.rnnlm")
    original, back = rnnlm_file.read(tmp_path / "nounk.model"), rnnlm_file.read(tmp_path / "back.rnnlm")
    assert back.words == original.words and (back.classes == original.classes).all()
    elman("import", "--rnnlm", tmp_path / "back.rnnlm", tmp_path / "again")
    assert load_params(tmp_path / "again")[0].direct_oov == p.direct_oov
    assert elman_ppl(tmp_path / "again") == pytest.approx(elman_ppl(tmp_path / "m"), rel=2e-4)


@pytest.mark.parametrize("value", [999, "1", -1])
def test_a_bad_direct_oov_is_refused_in_one_line(tmp_path, value):
    import json
    shutil.copytree(FIX / "elman-rnnme", tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "direct_oov": value}))
    done = subprocess.run([sys.executable, "-m", "elman", "eval", "--model", tmp_path / "m", "--data",
                           FIX / "test.txt"], capture_output=True, text=True)
    assert done.returncode == 2 and "direct_oov" in done.stderr and len(done.stderr.strip().splitlines()) == 1
