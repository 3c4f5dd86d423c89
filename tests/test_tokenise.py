"""The streaming tokeniser and vocabulary give exactly what the in-memory
reading gave (``read_tokens`` and the pre-cache ``Vocab.build``, kept in
helpers as ``legacy_vocab``), whatever the parts and the text."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from elman.data import EOS, UNK, Vocab, corpus_ids, read_tokens
from elman.data.tokenise import part_bounds, tokenise_file
from elman.errors import ElmanError
from helpers import legacy_ids, legacy_vocab

# Pieces of text that test every rule: words, the specials written as words,
# every kind of whitespace str.split() knows (and the \x1c-\x1f that
# bytes.split() does not), line ends of three kinds, a byte-order mark,
# non-ASCII letters, and the NUL the word tokeniser's sentinel starts from.
PIECES = ["a", "b", "cat", "é", "日本", "<eos>", "<unk>", " ", "  ", "\t", "\x0b", "\x0c", "\x1c", "\x1f",
          "\x85", "\xa0", "\u2028", "\u3000", "\x00", "\ufeff", "\n", "\n", "\r\n", "\r", "\n\n", " \n"]
texts = st.lists(st.sampled_from(PIECES), max_size=60).map("".join)


def tokens_of(path, level, part_bytes, workers=1, encoding="utf-8"):
    """The token stream the parts spell out, in file order."""
    out = []
    codec = __import__("codecs").lookup(encoding).name
    for part in tokenise_file(path, codec, level, path.stat().st_size, workers, part_bytes):
        out.extend(np.array(part.keys + [None], dtype=object)[part.ids].tolist())
        assert part.counts.tolist() == np.bincount(part.ids, minlength=len(part.keys)).tolist()
        assert len(set(part.keys)) == len(part.keys)
    return out


@settings(max_examples=300, deadline=None)
@given(text=texts, level=st.sampled_from(["word", "char"]), part_bytes=st.sampled_from([1, 2, 5, 16, 1 << 20]))
def test_parts_spell_out_the_token_stream(tmp_path_factory, text, level, part_bytes):
    path = tmp_path_factory.mktemp("t") / "c.txt"
    path.write_bytes(text.encode("utf-8"))
    try:
        want = read_tokens(path, level)
    except ElmanError:  # empty or blank: no tokens at all
        want = []
    assert tokens_of(path, level, part_bytes) == want


@settings(max_examples=150, deadline=None)
@given(text=texts, level=st.sampled_from(["word", "char"]), max_vocab=st.sampled_from([None, 2, 3, 6]),
       min_count=st.sampled_from([1, 2]), part_bytes=st.sampled_from([3, 1 << 20]))
def test_vocabulary_and_ids_are_the_in_memory_ones(tmp_path_factory, text, level, max_vocab, min_count,
                                                   part_bytes):
    d = tmp_path_factory.mktemp("v")
    path = d / "c.txt"
    path.write_bytes(text.encode("utf-8"))
    try:
        tokens = read_tokens(path, level)
    except ElmanError:
        with pytest.raises(ElmanError, match="empty or whitespace-only"):
            corpus_ids(path, level, cache_dir=d / "cache", part_bytes=part_bytes)
        return
    vocab, ids = corpus_ids(path, level, max_vocab=max_vocab, min_count=min_count, cache_dir=d / "cache",
                            part_bytes=part_bytes)
    want = legacy_vocab(tokens, max_vocab, min_count)
    assert vocab.itos == want.itos and vocab.counts.tolist() == want.counts.tolist()
    assert ids.ids.tolist() == legacy_ids(path, want, level).tolist()


@settings(max_examples=200, deadline=None)
@given(tokens=st.lists(st.sampled_from(["a", "b", "c", "d", EOS, UNK]), max_size=40),
       max_vocab=st.sampled_from([None, 2, 3, 5]), min_count=st.integers(1, 3))
def test_from_counts_is_the_legacy_rule(tokens, max_vocab, min_count):
    want = legacy_vocab(tokens, max_vocab, min_count)
    got = Vocab.build(tokens, max_vocab, min_count)
    assert got.itos == want.itos and got.counts.tolist() == want.counts.tolist()


def test_many_parts_on_two_worker_processes_merge_in_file_order(tmp_path):
    rng = np.random.default_rng(3)
    words = np.array([f"w{i}" for i in range(3000)])
    lines = [" ".join(words[rng.zipf(1.3, rng.integers(1, 30)) % 3000]) for _ in range(4000)]
    lines[100:103] = ["", "   ", "<eos> <unk> x\r"]
    path = tmp_path / "c.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    assert len(part_bounds(path, path.stat().st_size, "utf-8", 4096)) > 20
    assert tokens_of(path, "word", 4096, workers=2) == read_tokens(path)
    vocab, ids = corpus_ids(path, cache_dir=tmp_path / "cache", workers=2, part_bytes=4096)
    want = legacy_vocab(read_tokens(path))
    assert vocab.itos == want.itos and np.array_equal(ids.ids, legacy_ids(path, want))


def test_part_bounds_cut_after_whole_line_ends(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"ab\r\ncd\ref\ngh")
    cuts = part_bounds(path, 12, "utf-8", 1)
    assert cuts == [(0, 4), (4, 7), (7, 10), (10, 12)]  # never between \r and \n
    assert part_bounds(path, 12, "utf-16", 1) == [(0, 12)]  # \n bytes are not line ends there


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16", "utf-8-sig", "cp1252"])
def test_other_encodings_read_as_before(tmp_path, encoding):
    text = "\ufeffcafé au lait\r\nnaïve\n\n façade  \n" * 50
    if encoding in ("latin-1", "cp1252"):
        text = text.replace("\ufeff", "")
    path = tmp_path / "c.txt"
    path.write_bytes(text.encode(encoding))
    assert tokens_of(path, "word", 7, encoding=encoding) == read_tokens(path, "word", encoding)
    assert tokens_of(path, "char", 7, encoding=encoding) == read_tokens(path, "char", encoding)


def test_a_bad_byte_in_a_later_part_names_the_same_offset_and_line(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"good line\n" * 500 + b"bad \xff byte\n" + b"more\n" * 10)
    with pytest.raises(ElmanError) as before:
        read_tokens(path)
    with pytest.raises(ElmanError) as now:
        corpus_ids(path, cache_dir=tmp_path / "cache", part_bytes=64)
    assert str(now.value) == str(before.value)
    assert "offset 5004 (line 501)" in str(now.value)


def test_more_than_65536_types_take_uint32_ids(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n".join(" ".join(f"t{i}" for i in range(j, j + 10)) for j in range(0, 70_000, 10)) + "\n")
    vocab, ids = corpus_ids(path, cache_dir=tmp_path / "cache", part_bytes=50_000)
    assert len(vocab) == 70_002 and ids.ids.dtype == np.uint32
    assert np.array_equal(ids.ids, legacy_ids(path, vocab))
    small, ids16 = corpus_ids(path, cache_dir=tmp_path / "cache", max_vocab=1000)
    assert ids16.ids.dtype == np.uint16 and np.array_equal(ids16.ids, legacy_ids(path, small))
