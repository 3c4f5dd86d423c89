"""The hidden state an RNNLM model file saves, kept by ``elman import
--rnnlm`` as the model's starting state (tensor h_start = 1 - s, elman's
h' = 1 - h): a stream starts there, as ``rnnlm -test`` does. Held to
bench/rnnlm_test_replica.py, which recomputes ``-test`` in NumPy from the
file, and to the binary's ``-test`` outputs committed in fixtures/rnnlm:
what remains is the binary's approximate exp alone. A model without the
tensor (every model elman trains) scores as one whose start is zeros,
to the last digit."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from elman.core.params import initial_state
from elman.inference import engine
from elman.inference.dynamic import adapted_stream_losses
from elman.interop import rnnlm, rnnlm_file
from elman.model.perplexity import stream_losses
from elman.modelfile import load_params, save_checkpoint
from test_rnnlm_files import FIX, RNNLM_BIN, elman, rnnlm_ppl, unzipped

LN10 = np.log(10)


def _replica():
    spec = importlib.util.spec_from_file_location(
        "rnnlm_test_replica", Path(__file__).parents[1] / "bench" / "rnnlm_test_replica.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _source(name, tmp_path) -> Path:
    return unzipped(f"{name}.model", tmp_path) if name.startswith("rnnme") else FIX / f"{name}.model"


def _stream(vocab):
    """The fixtures' test text as one stream of ids, each line then <eos>."""
    lines = (FIX / "test.txt").read_text().splitlines()
    return np.array([i for ln in lines for i in [*vocab.encode(ln.split()), vocab.eos_id]])


@pytest.mark.parametrize("name", ["rnnlm-text", "rnnlm-binary", "rnnme-text"])
def test_the_saved_state_leaves_the_exp_alone(name, tmp_path):
    """Token by token, elman's log10 P of the import is the replica's with
    the exact exp from the saved state, the first tokens too; the replica
    with RNNLM's fasterexp is the committed ``-test`` figure; so elman's
    perplexity parts from ``-test`` by the exp's share and no more. From
    zeros (RNNLM's reset state) it was the state's share more."""
    path = _source(name, tmp_path)
    elman("import", "--rnnlm", path, tmp_path / "m")
    p, vocab, _ = load_params(tmp_path / "m")
    m = rnnlm_file.read(path)
    ids = _stream(vocab)
    theirs_ids = np.array([m.words.index("</s>" if i == vocab.eos_id else vocab.itos[i]) for i in ids])
    rep = _replica()
    exact, fast = (rep.replica(m, theirs_ids, fast_exp=e, saved_state=True) for e in (False, True))
    ppl = lambda lp: 10 ** (-lp.mean())                                          # noqa: E731
    theirs = rnnlm_ppl((FIX / f"{name}.test.out").read_text())
    assert ppl(fast) == pytest.approx(theirs, rel=2e-6)
    ours = -stream_losses(p, ids, vocab.eos_id) / LN10
    assert np.abs(ours - exact).max() < 2e-5
    exp_share = abs(ppl(exact) / theirs - 1)
    assert abs(ppl(ours) / theirs - 1) <= exp_share + 2e-6
    p.h_start = None
    from_zero = -stream_losses(p, ids, vocab.eos_id) / LN10
    assert abs(ppl(from_zero) / ppl(exact) - 1) > 5e-5                          # the state's share was there
    assert np.abs(from_zero - exact)[:3].max() > 100 * np.abs(ours - exact)[:3].max()


def test_streams_start_there_lines_on_their_own_at_zero(tmp_path):
    """eval, score --carry (its first line), dynamic evaluation start from
    h_start; a line scored on its own starts from zeros, as RNNLM's reset
    does (``-independent``; ``-nbest`` never reads the saved state)."""
    elman("import", "--rnnlm", FIX / "rnnlm-text.model", tmp_path / "m")
    p, vocab, _ = load_params(tmp_path / "m")
    zero = p.copy()
    zero.h_start = None
    ids = _stream(vocab)
    lines = _lines(ids, vocab.eos_id, 2)
    n = sum(len(line.ids) for line in lines)
    static = stream_losses(p, ids[:n], vocab.eos_id)
    carried = [x for _, x in engine.line_losses(p, lines, vocab.eos_id, carry=True)]
    np.testing.assert_allclose(np.concatenate(carried), static, rtol=1e-6)
    alone = [x for _, x in engine.line_losses(p, lines, vocab.eos_id)]
    alone0 = [x for _, x in engine.line_losses(zero, lines, vocab.eos_id)]
    np.testing.assert_array_equal(np.concatenate(alone), np.concatenate(alone0))
    assert abs(alone[0][0] - carried[0][0]) > 1e-3
    dynamic = adapted_stream_losses(p, ids[:n], vocab.eos_id, lr=0.0, T=10)
    np.testing.assert_allclose(dynamic, static, rtol=1e-5, atol=2e-6)       # float32 rounding
    assert abs(adapted_stream_losses(zero, ids[:n], vocab.eos_id, lr=0.0, T=10)[0] - dynamic[0]) > 1e-3
    np.testing.assert_array_equal(initial_state(p, 2), np.tile(p.h_start, (2, 1)))


class _Line:
    uid = None

    def __init__(self, ids):
        self.ids = np.asarray(ids, np.int64)


def _lines(ids, eos_id: int, n: int) -> list:
    """The first ``n`` lines of the stream ``ids``, each ending in <eos>."""
    ends = np.flatnonzero(ids == eos_id)[:n] + 1
    return [_Line(ids[a:b]) for a, b in zip(np.r_[0, ends[:-1]], ends)]


def test_a_start_of_zeros_is_no_start_to_the_last_digit(tmp_path):
    """A model with h_start = 0 saved beside its tensors scores exactly as
    the same model without one (eval, score with and without --carry,
    dynamic); a model file without the tensor loads without one."""
    p, vocab, cfg = load_params(FIX / "elman-model")
    assert p.h_start is None and not initial_state(p, 3).any()
    with_zero = p.copy()
    with_zero.h_start = np.zeros(p.Dh, p.dtype)
    save_checkpoint(tmp_path / "z", with_zero.as_dict(), vocab, {"level": "word"})
    q = load_params(tmp_path / "z")[0]
    np.testing.assert_array_equal(q.h_start, np.zeros(p.Dh))
    q.scoring = p.scoring
    ids = _stream(vocab)[:200]
    np.testing.assert_array_equal(stream_losses(q, ids, vocab.eos_id), stream_losses(p, ids, vocab.eos_id))
    lines = _lines(ids, vocab.eos_id, 3)
    for carry in (False, True):
        a = [x for _, x in engine.line_losses(p, lines, vocab.eos_id, carry=carry)]
        b = [x for _, x in engine.line_losses(q, lines, vocab.eos_id, carry=carry)]
        np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
    np.testing.assert_array_equal(adapted_stream_losses(q, ids, vocab.eos_id, 0.1, 10),
                                  adapted_stream_losses(p, ids, vocab.eos_id, 0.1, 10))


@pytest.mark.parametrize("name", ["rnnlm-text", "rnnlm-binary", "rnnme-text"])
def test_export_writes_the_saved_state_back(name, tmp_path):
    """import then ``export --rnnlm``: the file's saved state is the
    original's (to float32 rounding of 1 - (1 - s)); where the binary is at
    hand, its ``-test`` of the exported file is the original's figure."""
    path = _source(name, tmp_path)
    elman("import", "--rnnlm", path, tmp_path / "m")
    elman("export", "--model", tmp_path / "m", "--rnnlm", tmp_path / "x.rnnlm")
    original, back = rnnlm_file.read(path), rnnlm_file.read(tmp_path / "x.rnnlm")
    Dh = original.syn0.shape[0]
    np.testing.assert_allclose(back.hidden[:Dh], original.hidden, atol=6e-8)
    assert back.hidden[Dh] == 1                                    # the unit that carries b1 and b2
    p, vocab, _ = load_params(tmp_path / "m")
    again = rnnlm.from_elman(p, vocab)
    np.testing.assert_array_equal(again.hidden, back.hidden)
    if not Path(RNNLM_BIN).exists():
        pytest.skip("the rnnlm binary is not on this machine")
    shutil.copy(FIX / "test.txt", tmp_path / "test.txt")
    out = subprocess.run([RNNLM_BIN, "-rnnlm", "x.rnnlm", "-test", "test.txt"], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    assert rnnlm_ppl(out) == pytest.approx(rnnlm_ppl((FIX / f"{name}.test.out").read_text()), rel=2e-6)


def test_a_file_in_independent_sentences_mode_has_no_start(tmp_path):
    """``-test`` of a file saved in independent sentences mode resets the
    state to 1.0 before the first word: the import keeps no h_start."""
    text = (FIX / "rnnlm-text.model").read_text(encoding="latin-1")
    path = tmp_path / "ind.model"
    path.write_text(text.replace("independent sentences mode: 0", "independent sentences mode: 1", 1),
                    encoding="latin-1")
    elman("import", "--rnnlm", path, tmp_path / "m")
    p, _, cfg = load_params(tmp_path / "m")
    assert p.h_start is None and cfg["rnnlm"]["independent"] == 1


def test_a_start_of_the_wrong_shape_is_refused_in_one_line(tmp_path):
    p, vocab, _ = load_params(FIX / "elman-model")
    arrays = {**p.as_dict(), "h_start": np.zeros(p.Dh + 1, p.dtype)}
    save_checkpoint(tmp_path / "m", arrays, vocab, {"level": "word"})
    done = subprocess.run([sys.executable, "-m", "elman", "eval", "--model", tmp_path / "m", "--data",
                           FIX / "test.txt"], capture_output=True, text=True)
    assert done.returncode != 0 and "h_start" in done.stderr and len(done.stderr.strip().splitlines()) == 1
