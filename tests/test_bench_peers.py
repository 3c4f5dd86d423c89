"""``elman bench --vs-peers``: the peer's text and the speed read from its reports
(a stand-in executable that reports as faster-rnnlm does)."""
import os
import stat

import numpy as np
import pytest

from elman.bench import peers
from elman.bench.speed import zipf_counts
from elman.errors import ElmanError


def test_text_holds_every_word_then_zipf_draws(tmp_path):
    path = tmp_path / "t.txt"
    peers.write_text(path, zipf_counts(2500), tokens=4000, seed=0)
    lines = path.read_text().splitlines()
    words = [w for line in lines for w in line.split()]
    assert words[:2500] == [f"w{i}" for i in range(2500)]
    drawn = words[2500:]
    assert len(drawn) == 4000 and all(len(line.split()) == peers.LINE for line in lines[3:])
    counts = np.bincount([int(w[1:]) for w in drawn], minlength=2500)
    assert counts[0] > counts[10] > counts[1000]           # Zipf: the first ids the most frequent


def test_speed_is_the_last_report(tmp_path):
    fake = tmp_path / "faster-rnnlm"
    fake.write_text("#!/bin/sh\nprintf 'Constructed a vocabulary\\n' >&2\n"
                    "printf '\\rEpoch  1  lr: 1e-01  progress:   1.00%%  120.50 Kwords/sec  ' >&2\n"
                    "printf '\\rEpoch  1  lr: 1e-01  progress:   2.00%%  231.25 Kwords/sec  ' >&2\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    got = peers.faster_rnnlm(peers.find_binary(str(fake)), zipf_counts(300), Dh=8, seconds=0.5, words_per_s_guess=1000)
    assert got["words_per_s"] == pytest.approx(231250.0)
    assert got["command"].startswith("faster-rnnlm -hidden 8 -hidden-type sigmoid -threads 1")


def test_a_missing_or_silent_peer_is_one_clear_error(tmp_path):
    with pytest.raises(ElmanError, match="no faster-rnnlm executable"):
        peers.find_binary(str(tmp_path / "nothing"))
    silent = tmp_path / "silent"
    silent.write_text("#!/bin/sh\necho 'cannot open file' >&2\nexit 1\n")
    silent.chmod(silent.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(ElmanError, match="reported no speed.*cannot open file"):
        peers.faster_rnnlm(str(silent), zipf_counts(300), Dh=8, seconds=0.5, words_per_s_guess=1000)
