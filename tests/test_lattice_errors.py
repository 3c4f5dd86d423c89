"""Bad lattices: one line naming the file and line, the other utterances
rescored and written, nothing half-written."""
from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import random_model
from elman.data.vocab import Vocab
from elman.modelfile import save_checkpoint

WORDS = "<eos> <unk> the a cat dog sat".split()
GOOD = ("VERSION=1.0\nUTTERANCE={name}\nN=3 L=3\nI=0\nI=1\nI=2\n"
        "J=0 S=0 E=1 W=the a=-1 l=-1\nJ=1 S=0 E=1 W=a a=-30 l=-1\nJ=2 S=1 E=2 W=cat a=-2 l=-1\n")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    save_checkpoint(d, random_model(V=len(WORDS), d=4, Dh=5, dtype="float32").as_dict(), Vocab(WORDS),
                    {"level": "word"})
    return d


def rescore(*args):
    done = subprocess.run([sys.executable, "-m", "elman", "rescore", *map(str, args), "--jobs", "1"],
                          capture_output=True, text=True)
    return done.returncode, done.stdout, done.stderr.strip().splitlines()


SLF_FAULTS = {
    "cycle": (GOOD.replace("N=3 L=3", "end=2\nN=3 L=4") + "J=3 S=2 E=1 W=cat a=-1 l=-1\n",
              ":10: the lattice has a cycle"),
    "missing": (GOOD.replace("E=2 W=cat", "E=7 W=cat"), ":9: a link to node 7"),
    "no-start": (GOOD.replace("N=3 L=3", "N=4 L=3").replace("I=2\n", "I=2\nI=3\n"),
                 "no start= field and 2 nodes could be the start"),
    "number": (GOOD.replace("a=-30", "a=-30x"), ":8: a=-30x is not a number"),
    "truncated": ("\n".join(GOOD.splitlines()[:-1]) + "\n", ":3: N=3 L=3, but the file has 3 nodes and 2 links"),
    "empty": ("VERSION=1.0\nN=0 L=0\n", ":2: an empty lattice"),
}


@pytest.mark.parametrize("fault", sorted(SLF_FAULTS))
def test_slf_faults(model, tmp_path, fault):
    text, message = SLF_FAULTS[fault]
    (tmp_path / "good1.lat").write_text(GOOD.format(name="good1"))
    (tmp_path / "bad.lat").write_text(text.replace("{name}", "bad"))
    (tmp_path / "good2.lat").write_text(GOOD.format(name="good2"))
    (tmp_path / "list").write_text("good1.lat\nbad.lat\ngood2.lat\n")
    code, out, err = rescore("--model", model, "--lattice", tmp_path / "list", "--out", tmp_path / "out")
    assert code == 2
    assert [line for line in err if "bad.lat" in line] == [next(line for line in err if message in line)]
    assert f"bad.lat{message}" in "".join(err) or message.startswith("no start")
    assert out.split("\n")[:2] == ["good1 the cat", "good2 the cat"]
    assert sorted(x.name for x in (tmp_path / "out").iterdir()) == ["good1.lat", "good2.lat"]


WORDS_TXT = "<eps> 0\nthe 1\na 2\ncat 3\n"
KALDI_GOOD = "{name}\n0\t1\t1\t1,1,\n0\t1\t2\t1,30,\n1\t2\t3\t1,2,\n2\t0,0,\n\n"
KALDI_FAULTS = {
    "word": ("bad\n0\t1\t9\t1,1,\n1\t0,0,\n\n", ":8: word id 9 is not in the symbol table"),
    "empty": ("bad\n\n", ":7: utterance bad is empty"),
    "no-end": ("bad\n0\t1\t1\t1,1,\n\n", "utterance bad: no end (final) node"),
    "number": ("bad\n0\t1\t1\tone,1,\n1\n\n", ":8: 'one,1,': the costs are not numbers"),
    "cycle": ("bad\n0\t1\t1\t1,1,\n1\t0\t2\t1,1,\n1\n\n", ":8: the lattice has a cycle"),
}


@pytest.mark.parametrize("fault", sorted(KALDI_FAULTS))
def test_kaldi_faults(model, tmp_path, fault):
    text, message = KALDI_FAULTS[fault]
    (tmp_path / "words.txt").write_text(WORDS_TXT)
    (tmp_path / "in.txt").write_text(KALDI_GOOD.format(name="u1") + text + KALDI_GOOD.format(name="u2"))
    out_file = tmp_path / "out.txt"
    code, out, err = rescore("--model", model, "--lattice", tmp_path / "in.txt", "--words", tmp_path / "words.txt",
                             "--out", out_file)
    assert code == 2
    bad = [line for line in err if "in.txt" in line]
    assert len(bad) == 1 and message in bad[0], err
    assert out.split("\n")[:2] == ["u1 the cat", "u2 the cat"]
    written = out_file.read_text()
    assert written.startswith("u1\n") and "\nu2\n" in written and "bad" not in written
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []     # no temporary left


def test_max_arcs_line(model, tmp_path):
    (tmp_path / "a.lat").write_text(GOOD.format(name="a"))
    code, out, err = rescore("--model", model, "--lattice", tmp_path / "a.lat", "--max-arcs", "2")
    assert code == 0 and out == "a the cat\n"
    assert any("utterance a: its expansion passes --max-arcs 2" in line and "old scores" in line for line in err)
