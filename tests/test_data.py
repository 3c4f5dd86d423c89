"""Corpus reading, the vocabulary and batching (elman.data)."""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from elman.data import (EOS, UNK, Vocab, batchify, check_enough, iter_batches, num_batches,
                        read_lines, read_tokens, resolve_corpus)
from elman.errors import ElmanError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return p


def one_line_error(exc_info, path):
    msg = str(exc_info.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


# -- reading ----------------------------------------------------------------------

def test_word_level_adds_eos_and_skips_blank_lines(tmp_path):
    p = write(tmp_path, "a.txt", "the cat  sat\n\n   \n a dog\t<unk> \n")
    assert read_tokens(p) == ["the", "cat", "sat", EOS, "a", "dog", UNK, EOS]


def test_last_line_without_newline_crlf_cr_and_bom(tmp_path):
    p = write(tmp_path, "a.txt", b"\xef\xbb\xbfone two\r\nthree\rfour")
    assert read_tokens(p) == ["one", "two", EOS, "three", EOS, "four", EOS]


def test_form_feed_does_not_end_a_line(tmp_path):
    # str.splitlines would cut here; PTB tools split on newlines only.
    p = write(tmp_path, "a.txt", "ab\x0ccd e\u2028f\n")
    assert read_tokens(p, level="char") == list("ab\x0ccd e\u2028f") + [EOS]


def test_char_level_keeps_spaces_as_tokens(tmp_path):
    p = write(tmp_path, "a.txt", "to be\n\nor\n")
    assert read_tokens(p, level="char") == ["t", "o", " ", "b", "e", EOS, "o", "r", EOS]


def test_read_lines_gives_each_sentence(tmp_path):
    p = write(tmp_path, "a.txt", "a b\n\nc\n")
    assert read_lines(p) == [["a", "b"], ["c"]]


def test_other_encoding(tmp_path):
    p = write(tmp_path, "a.txt", "café au lait\n".encode("latin-1"))
    assert read_tokens(p, encoding="latin-1") == ["café", "au", "lait", EOS]


@pytest.mark.parametrize("content", [b"", b"\n\n", b"  \t \r\n \n"])
def test_empty_or_whitespace_only_file(tmp_path, content):
    p = write(tmp_path, "empty.txt", content)
    with pytest.raises(ElmanError) as e:
        read_tokens(p)
    assert "empty" in one_line_error(e, p)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.txt"
    with pytest.raises(ElmanError) as e:
        read_tokens(p)
    assert "no such file" in one_line_error(e, p)


def test_directory_where_a_file_belongs(tmp_path):
    with pytest.raises(ElmanError) as e:
        read_tokens(tmp_path)
    assert "directory" in one_line_error(e, tmp_path)


def test_undecodable_bytes_name_the_offset(tmp_path):
    data = "line one\nline two é\n".encode("utf-8") + b"abc \xff\xfe def\n"
    p = write(tmp_path, "bad.txt", data)
    with pytest.raises(ElmanError) as e:
        read_tokens(p)
    msg = one_line_error(e, p)
    offset = data.index(b"\xff")
    assert f"offset {offset}" in msg
    assert "line 3" in msg and "0xff" in msg


def test_unknown_encoding(tmp_path):
    p = write(tmp_path, "a.txt", "x\n")
    with pytest.raises(ElmanError) as e:
        read_tokens(p, encoding="no-such-codec")
    assert "no-such-codec" in one_line_error(e, p)


def test_unreadable_file(tmp_path, monkeypatch):
    p = write(tmp_path, "locked.txt", "x\n")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))
    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ElmanError) as e:
        read_tokens(p)
    assert "permission denied" in one_line_error(e, p)


def test_unknown_level(tmp_path):
    p = write(tmp_path, "a.txt", "x\n")
    with pytest.raises(ElmanError, match="level"):
        read_tokens(p, level="byte")


# -- corpus directories ----------------------------------------------------------------

def test_resolve_corpus_directory(tmp_path):
    for name in ("train.txt", "valid.txt", "test.txt"):
        write(tmp_path, name, "a\n")
    assert resolve_corpus(tmp_path) == (tmp_path / "train.txt", tmp_path / "valid.txt", tmp_path / "test.txt")
    other = write(tmp_path, "other.txt", "b\n")
    assert resolve_corpus(tmp_path, valid=other)[1] == other


def test_resolve_corpus_directory_without_test(tmp_path):
    write(tmp_path, "train.txt", "a\n")
    write(tmp_path, "valid.txt", "a\n")
    assert resolve_corpus(tmp_path)[2] is None


@pytest.mark.parametrize("present", [(), ("valid.txt", "test.txt"), ("train.txt",)])
def test_resolve_corpus_incomplete_directory(tmp_path, present):
    for name in present:
        write(tmp_path, name, "a\n")
    with pytest.raises(ElmanError) as e:
        resolve_corpus(tmp_path)
    assert "train.txt" in one_line_error(e, tmp_path) or "valid.txt" in str(e.value)


def test_resolve_corpus_files(tmp_path):
    tr, va = write(tmp_path, "tr", "a\n"), write(tmp_path, "va", "a\n")
    assert resolve_corpus(tr, va) == (tr, va, None)
    with pytest.raises(ElmanError, match="--valid"):
        resolve_corpus(tr)
    with pytest.raises(ElmanError) as e:
        resolve_corpus(tmp_path / "missing", va)
    one_line_error(e, tmp_path / "missing")


# -- vocabulary ----------------------------------------------------------------------------

def test_ids_follow_descending_frequency_ties_by_first_occurrence():
    v = Vocab.build("b a c a b a d".split() + [EOS])
    assert v.itos[:4] == ["a", "b", "c", "d"]
    assert v.counts.tolist() == [3, 2, 1, 1, 1, 0]
    assert v.itos[4:] == [EOS, UNK]          # <unk> added, count 0
    assert v.unk_id == 5 and v.eos_id == 4
    assert v.counts.dtype == np.int64 and np.all(np.diff(v.counts) <= 0)


def test_max_vocab_and_min_count_send_the_rest_to_unk():
    toks = "a a a a b b b c c d".split() + [EOS] * 2
    v = Vocab.build(toks, max_vocab=4)
    assert len(v) == 4 and set(v.itos) == {"a", "b", EOS, UNK}
    assert v.counts[v.unk_id] == 3           # c c d
    assert v.decode(v.encode("a c zzz".split())) == ["a", UNK, UNK]
    v = Vocab.build(toks, min_count=2)
    assert set(v.itos) == {"a", "b", "c", EOS, UNK} and v.counts[v.unk_id] == 1
    assert v.counts.sum() == len(toks)


def test_existing_unk_is_counted_not_duplicated():
    v = Vocab.build(["x", UNK, UNK, UNK, EOS])
    assert v.itos == [UNK, "x", EOS] and v.counts.tolist() == [3, 1, 1]


@pytest.mark.parametrize("kwargs", [{"max_vocab": 1}, {"max_vocab": 0}, {"min_count": 0}])
def test_bad_vocab_options(kwargs):
    with pytest.raises(ElmanError):
        Vocab.build(["a", EOS], **kwargs)


@pytest.mark.parametrize("itos", [[UNK], ["a", "a", EOS, UNK], ["a", UNK], ["a", "", EOS, UNK], ["a\r", EOS, UNK]])
def test_invalid_vocabularies(itos):
    with pytest.raises(ElmanError):
        Vocab(itos)


def test_decode_out_of_range():
    v = Vocab.build(["a", EOS])
    with pytest.raises(ElmanError, match="outside"):
        v.decode([0, 7])


def test_save_load_round_trip_with_awkward_characters(tmp_path):
    toks = list("a b\tc\x0cd\u2028é") + ["\u00a0", EOS, "<s>"]
    v = Vocab.build(toks)
    v.save(tmp_path / "vocab.txt")
    w = Vocab.load(tmp_path / "vocab.txt")
    assert w.itos == v.itos and w.counts is None
    assert (tmp_path / "vocab.txt").read_text("utf-8").split("\n")[:-1] == v.itos
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.txt"]  # no temp file left


def test_load_errors(tmp_path):
    dup = write(tmp_path, "dup.txt", "a\nb\na\n<eos>\n<unk>\n")
    with pytest.raises(ElmanError) as e:
        Vocab.load(dup)
    assert "twice" in one_line_error(e, dup)
    short = write(tmp_path, "short.txt", "<unk>\n")
    with pytest.raises(ElmanError) as e:
        Vocab.load(short)
    assert "at least 2" in one_line_error(e, short)
    crlf = write(tmp_path, "crlf.txt", "<unk>\r\n<eos>\r\n")
    with pytest.raises(ElmanError) as e:
        Vocab.load(crlf)
    one_line_error(e, crlf)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)),
                        min_size=1, max_size=3), min_size=1, max_size=40))
def test_vocab_text_round_trip_and_encode_decode(tokens):
    v = Vocab.build(tokens)
    assert Vocab.from_text(v.to_text()).itos == v.itos
    assert v.decode(v.encode(tokens)) == tokens
    assert sorted(v.itos) == sorted(set(tokens) | {EOS, UNK})


# -- batches ------------------------------------------------------------------------------

def test_batchify_makes_contiguous_streams():
    s = batchify(np.arange(23), 4)
    assert s.shape == (4, 5) and s.dtype == np.int64
    assert s[1].tolist() == [5, 6, 7, 8, 9]


def test_too_little_text():
    with pytest.raises(ElmanError) as e:
        check_enough(np.arange(41), 4, 10, "tiny.txt")
    msg = str(e.value)
    assert "tiny.txt" in msg and "44" in msg and "41" in msg
    check_enough(np.arange(44), 4, 10)
    with pytest.raises(ElmanError, match="too little text"):
        batchify(np.arange(7), 4)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(2, 300), B=st.integers(1, 8), T=st.integers(1, 12), data=st.data())
def test_windows_cover_every_pair_once_and_resume(n, B, T, data):
    if n // B < 2:
        return
    s = batchify(np.arange(n), B)
    windows = list(iter_batches(s, T))
    assert [k for k, _, _ in windows] == list(range(num_batches(s, T)))
    x = np.concatenate([w[1] for w in windows], axis=1)
    y = np.concatenate([w[2] for w in windows], axis=1)
    assert np.array_equal(x, s[:, :-1]) and np.array_equal(y, s[:, 1:])
    assert all(w[1].shape[1] == T for w in windows[:-1]) and 1 <= windows[-1][1].shape[1] <= T
    k = data.draw(st.integers(0, len(windows)))
    resumed = list(iter_batches(s, T, start=k))
    assert len(resumed) == len(windows) - k
    assert all(a[0] == b[0] and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
               for a, b in zip(resumed, windows[k:]))


# -- the shared corpora -----------------------------------------------------------------------

def shared_file(*parts):
    p = SHARED.joinpath(*parts)
    if not p.is_file():
        pytest.skip(f"{p} not present (the shared data directory is absent)")
    return p


def test_wikitext2_valid_reads_as_words():
    p = shared_file("wikitext-2", "valid.txt")
    toks = read_tokens(p)
    lines = [ln for ln in p.read_text("utf-8").split("\n") if ln.strip()]
    assert toks.count(EOS) == len(lines)
    assert len(toks) == sum(len(ln.split()) for ln in lines) + len(lines)
    assert 200_000 < len(toks) < 230_000
    v = Vocab.build(toks)
    assert v.itos[0] in ("the", UNK, ",") and 10_000 < len(v) < 20_000


def test_tinyshakespeare_reads_as_characters():
    p = shared_file("tinyshakespeare", "input.txt")
    toks = read_tokens(p, level="char")
    text = p.read_text("utf-8")
    lines = [ln for ln in text.split("\n") if ln.strip()]
    assert toks.count(EOS) == len(lines)
    assert len(toks) == sum(map(len, lines)) + len(lines)
    v = Vocab.build(toks)
    assert " " in v and 50 < len(v) < 80
    assert v.itos[0] == " "                  # the most frequent character
