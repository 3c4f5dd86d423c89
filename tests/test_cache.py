"""The token-id cache: keyed by what decides the ids, atomic, checked when
opened, rebuilt when unsound, built once by concurrent processes, and never
a reason to lose the user's files or to fail with more than one line."""
import errno
import fcntl
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from elman import cli
from elman.data import Streams, TokenIds, cache, cachefile, corpus_ids, ids as ids_module, read_tokens, tokenise
from elman.errors import ElmanError
from elman.modelfile import read_safetensors
from elman.training import train as train_module
from helpers import legacy_ids, legacy_vocab

SRC = str(Path(__file__).resolve().parents[1] / "src")


def corpus(tmp_path, lines=300, name="c.txt", seed=0):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(40)]
    path = tmp_path / name
    path.write_text("\n".join(" ".join(rng.choice(words, rng.integers(1, 12))) for _ in range(lines)) + "\n")
    return path


class Said(list):
    def __call__(self, line):
        assert "\n" not in line
        self.append(line)


def files(d):
    return sorted(p.name for p in Path(d).iterdir() if not p.name.endswith(".lock"))


def test_built_once_then_read_from_the_cache(tmp_path):
    path, said = corpus(tmp_path), Said()
    v1, a = corpus_ids(path, cache_dir=tmp_path / "c", say=said)
    v2, b = corpus_ids(path, cache_dir=tmp_path / "c", say=said)
    assert "tokenised" in said[0] and str(tmp_path / "c") in said[0] and "from the cache" in said[1]
    assert v1.itos == v2.itos and np.array_equal(a.ids, b.ids) and b.ids.dtype == np.uint16
    assert isinstance(b.ids.base, memoryview) or b.where.endswith(".ids")  # a map of the entry, not a copy
    assert np.array_equal(b.ids, legacy_ids(path, legacy_vocab(read_tokens(path))))
    assert len(files(tmp_path / "c")) == 2  # the counts and the ids


def test_everything_that_decides_the_ids_keys_the_entry(tmp_path, monkeypatch):
    path, d = corpus(tmp_path), tmp_path / "c"
    vocab, base = corpus_ids(path, cache_dir=d)
    entries = {base.where}
    median = int(np.median(vocab.counts))
    for kw in (dict(level="char"), dict(encoding="latin-1"), dict(max_vocab=10), dict(min_count=median)):
        v, ids = corpus_ids(path, cache_dir=d, **kw)
        entries.add(ids.where)
        assert np.array_equal(ids.ids, legacy_ids(path, v, kw.get("level", "word"), kw.get("encoding", "utf-8")))
    assert len(entries) == 5
    monkeypatch.setattr(cache, "TOKENISER_VERSION", tokenise.TOKENISER_VERSION + 1)
    said = Said()
    corpus_ids(path, cache_dir=d, say=said)
    assert "tokenised" in said[0]  # a new tokeniser never reuses the old one's ids


def test_a_changed_file_is_never_served_stale(tmp_path):
    path, d = corpus(tmp_path), tmp_path / "c"
    corpus_ids(path, cache_dir=d)
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[:2] = b"zz"  # same size, same time stamps: only the content differs
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    vocab, ids = corpus_ids(path, cache_dir=d)
    assert "zz" + data[2:data.index(b" ")].decode() in vocab
    assert np.array_equal(ids.ids, legacy_ids(path, legacy_vocab(read_tokens(path))))


@pytest.mark.parametrize("damage", ["truncate", "append", "data", "header"])
def test_a_damaged_entry_is_detected_and_rebuilt(tmp_path, damage):
    path, d = corpus(tmp_path), tmp_path / "c"
    vocab, ids = corpus_ids(path, cache_dir=d)
    want, entry = np.array(ids.ids), Path(ids.where)
    del ids
    raw = bytearray(entry.read_bytes())
    if damage == "truncate":
        raw = raw[:-7]
    elif damage == "append":
        raw += b"\0\0"
    elif damage == "data":
        raw[cachefile.HEADER + 10] ^= 0xFF
    else:
        raw[40] ^= 0x01
    entry.write_bytes(bytes(raw))
    said = Said()
    _, again = corpus_ids(path, cache_dir=d, say=said)
    assert "unusable" in said[0] and str(entry) in said[0] and "tokenised" in said[-1]
    assert np.array_equal(again.ids, want) and cachefile.verify(entry)["items"] == len(want)


def test_a_garbage_counts_entry_is_rebuilt(tmp_path):
    path, d = corpus(tmp_path), tmp_path / "c"
    vocab, _ = corpus_ids(path, cache_dir=d)
    counts = next(p for p in d.iterdir() if p.name.endswith(".counts"))
    counts.write_bytes(b"\x80" * counts.stat().st_size)
    said = Said()
    again, _ = corpus_ids(path, cache_dir=d, say=said)
    assert "unusable" in said[0] and again.itos == vocab.itos


def test_concurrent_builders_build_once_and_agree(tmp_path):
    path, d = corpus(tmp_path, lines=20_000), tmp_path / "c"
    go = tmp_path / "go"
    # Each process imports, says it is ready, and starts when all are (so they overlap).
    code = ("import os, sys, time, hashlib; from elman.data import corpus_ids; "
            "open(sys.argv[3] + f'.{os.getpid()}', 'w').close(); "
            "[time.sleep(0.01) for _ in iter(lambda: os.path.exists(sys.argv[3]), True)]; "
            "v, ids = corpus_ids(sys.argv[1], cache_dir=sys.argv[2], say=print, part_bytes=1 << 12); "
            "print('digest', hashlib.sha256(ids.ids.tobytes()).hexdigest(), len(v))")
    env = {**os.environ, "PYTHONPATH": SRC}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(d), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(3)]
    while len(list(tmp_path.glob("go.*"))) < 3:
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    digests = {line for out, _ in outs for line in out.splitlines() if line.startswith("digest")}
    assert len(digests) == 1
    built = sum("tokenised" in out for out, _ in outs)
    assert built == 1, outs  # the others waited for the lock, then read the entry
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]


def test_a_dead_builders_leftovers_are_removed(tmp_path):
    path, d = corpus(tmp_path), tmp_path / "c"
    d.mkdir()
    key = cache.Source.open(path, "word", "utf-8").key
    stale = d / f".{key}.counts.abc123.tmp"
    stale.write_bytes(b"half written")
    corpus_ids(path, cache_dir=d)
    assert not stale.exists() and len(files(d)) == 2


def test_a_full_disk_leaves_no_partial_entry_and_one_line(tmp_path, monkeypatch, capsys):
    path, d = corpus(tmp_path, lines=3000), tmp_path / "c"
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    written = []

    def full_after_1000_bytes(real):
        def write(self, data):
            if sum(written) > 1000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written.append(np.asarray(data).nbytes)
            real(self, data)
        return write

    for cls in (cachefile.Writer, ids_module._Scratch):  # the entries and the scratch file
        monkeypatch.setattr(cls, "write", full_after_1000_bytes(cls.write))
    with pytest.raises(ElmanError) as e:
        corpus_ids(path, cache_dir=d, part_bytes=2000)
    assert "No space left on device" in str(e.value) and "\n" not in str(e.value)
    assert files(d) == [] and hashlib.sha256(path.read_bytes()).hexdigest() == before
    rc = cli.main(["train", "--train", str(path), "--valid", str(path), "--out", str(tmp_path / "m"),
                   "--cache-dir", str(d), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "No space left on device" in err[0] and files(d) == []


def test_a_file_that_changes_during_the_build_is_refused(tmp_path, monkeypatch):
    path, d = corpus(tmp_path, lines=3000), tmp_path / "c"
    real = ids_module.tokenise_file

    def while_someone_appends(*a, **k):
        for i, part in enumerate(real(*a, **k)):
            if i == 0:
                with open(path, "a") as f:
                    f.write("w1 w2\n")
            yield part

    monkeypatch.setattr(ids_module, "tokenise_file", while_someone_appends)
    with pytest.raises(ElmanError, match="changed while it was being read"):
        corpus_ids(path, cache_dir=d, part_bytes=2000)
    assert files(d) == []


@pytest.mark.parametrize("content", [b"", b"  \n\t\n\r\n"])
def test_an_empty_file_is_one_line_and_no_entry(tmp_path, content):
    path = tmp_path / "e.txt"
    path.write_bytes(content)
    with pytest.raises(ElmanError, match="empty or whitespace-only"):
        corpus_ids(path, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists() or files(tmp_path / "c") == []


def test_an_unusable_default_cache_falls_back_to_memory(tmp_path, monkeypatch):
    path = corpus(tmp_path)
    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file" / "below"))
    said = Said()
    vocab, ids = corpus_ids(path, say=said)
    assert "cannot be used" in said[0] and "into memory" in said[0] and ids.where == "memory"
    assert np.array_equal(ids.ids, legacy_ids(path, legacy_vocab(read_tokens(path))))
    with pytest.raises(ElmanError, match="--cache-dir .*not a directory"):
        corpus_ids(path, cache_dir=tmp_path / "file")


def test_streams_hand_back_pages_and_still_read_the_same_ids(tmp_path, monkeypatch):
    path = corpus(tmp_path, lines=4000)
    vocab, ids = corpus_ids(path, cache_dir=tmp_path / "c")
    plain = np.array(ids.ids, dtype=np.int64)
    calls = []

    def release(a, b):
        calls.append((a, b))
        ids.release(a, b)

    monkeypatch.setattr(Streams, "RELEASE_BYTES", 4096)
    B, T = 4, 7
    mapped, ref = Streams(ids.ids, B, release), Streams(plain, B)
    n = mapped.rows.shape[1]
    for (k, x, y), (_, x0, y0) in zip(mapped.windows(T), ref.windows(T)):
        assert x.dtype == np.int64 and np.array_equal(x, x0) and np.array_equal(y, y0)
        assert all(b - a <= k * T for a, b in calls)  # never ahead of the window
    assert calls and {a % n for a, _ in calls} == {0} and max(b - a for a, b in calls) >= n - 2048 - T
    assert list(mapped.windows(T, start=3))[0][1].tolist() == ref.rows[:, 21:28].tolist()  # refaulted pages
    calls.clear()
    mine = Streams(ids.ids, B, release, part=slice(2, 4))  # one process's share of the B (MPI)
    for (_, x, y), (_, x0, y0) in zip(mine.windows(T), ref.windows(T)):
        assert np.array_equal(x, x0[2:4]) and np.array_equal(y, y0[2:4])
    assert calls and {a for a, _ in calls} == {2 * n, 3 * n}


def test_cache_list_and_clear_touch_only_elmans_files(tmp_path, capsys):
    path, d = corpus(tmp_path), tmp_path / "c"
    corpus_ids(path, cache_dir=d)
    corpus_ids(corpus(tmp_path, name="other.txt", seed=1), cache_dir=d)
    (d / "notes.txt").write_text("the user's own file")
    assert cli.main(["cache", "list", "--cache-dir", str(d)]) == 0
    out = capsys.readouterr().out
    assert "4 entries" in out and out.count(str(path.resolve())) == 2
    held_key = cache.Source.open(path, "word", "utf-8").key
    with open(d / f".{held_key}.lock", "a+b") as lock:  # a build of c.txt in progress
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert cli.main(["cache", "clear", "--cache-dir", str(d)]) == 0
    assert "removed 2 files" in capsys.readouterr().out
    assert sorted(p.name for p in d.iterdir() if p.name.startswith(held_key)) and (d / "notes.txt").exists()
    assert cli.main(["cache", "clear", "--cache-dir", str(d)]) == 0
    assert files(d) == ["notes.txt"]
    assert cli.main(["cache", "list", "--cache-dir", str(d / "notes.txt")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_eval_and_train_take_the_cache_dir(tmp_path, capsys):
    tr, va = corpus(tmp_path, lines=400), corpus(tmp_path, lines=60, name="v.txt", seed=2)
    d = tmp_path / "c"
    assert cli.main(["train", "--train", str(tr), "--valid", str(va), "--out", str(tmp_path / "m"), "--hidden", "8",
                     "--embed", "8", "--batch", "4", "--bptt", "5", "--epochs", "1", "--cache-dir", str(d)]) == 0
    assert len(files(d)) == 3  # train: counts and ids; valid: ids
    capsys.readouterr()
    assert cli.main(["eval", "--model", str(tmp_path / "m"), "--data", str(va), "--cache-dir", str(d)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "from the cache" in err and str(d) in err


@pytest.mark.parametrize("extra", [{}, {"sampled": 7, "dropout": 0.2, "optimizer": "adam"},
                                   {"direct": 0.001, "direct_order": 3, "classes": 4}])
def test_training_on_the_cache_gives_the_in_memory_weights_bit_for_bit(tmp_path, monkeypatch, extra):
    tr, va = corpus(tmp_path, lines=500), corpus(tmp_path, lines=60, name="v.txt", seed=5)
    opts = dict(train=str(tr), valid=str(va), test=str(va), hidden=12, embed=10, streams=4, steps=6, epochs=2,
                max_vocab=30, **extra)
    cached = train_module.train(tmp_path / "cached", opts, quiet=True, cache_dir=tmp_path / "c")

    def in_memory(path, level, encoding, vocab=None, max_vocab=None, min_count=1, **_):
        """How training read its files before the cache: every token in a list, int64 ids."""
        if vocab is None:
            vocab = legacy_vocab(read_tokens(path, level, encoding), max_vocab, min_count)
        return vocab, TokenIds(legacy_ids(path, vocab, level, encoding), "memory")

    monkeypatch.setattr(train_module.data, "corpus_ids", in_memory)
    memory = train_module.train(tmp_path / "memory", opts, quiet=True)
    assert cached["best_valid_ppl"] == memory["best_valid_ppl"] and cached["test_ppl"] == memory["test_ppl"]
    for f in ("model.safetensors", "last/model.safetensors", "last/optimizer.safetensors", "vocab.txt"):
        a, b = tmp_path / "cached" / f, tmp_path / "memory" / f
        if f.endswith(".txt"):
            assert a.read_text() == b.read_text()
            continue
        ta, tb = read_safetensors(a), read_safetensors(b)
        assert sorted(ta) == sorted(tb) and all(np.array_equal(ta[k], tb[k]) for k in ta), f


def test_eval_reads_a_pipe_as_it_reads_the_file(tmp_path):
    tr, va = corpus(tmp_path, lines=400), corpus(tmp_path, lines=60, name="v.txt", seed=2)
    train_module.train(tmp_path / "m", dict(train=str(tr), valid=str(va), hidden=8, embed=8, streams=4, steps=5,
                                            epochs=1), quiet=True, cache_dir=tmp_path / "c")
    env = {**os.environ, "PYTHONPATH": SRC}
    args = [sys.executable, "-m", "elman", "eval", "--model", str(tmp_path / "m"), "--json", "--cache-dir",
            str(tmp_path / "c2")]
    from_file = subprocess.run(args + ["--data", str(va)], capture_output=True, text=True, env=env)
    piped = subprocess.run(args + ["--data", "/dev/stdin"], input=va.read_text(), capture_output=True, text=True,
                           env=env)
    assert piped.returncode == 0 and piped.stdout == from_file.stdout and "/dev/stdin" in piped.stderr
    bad = subprocess.run(args + ["--data", "/dev/stdin"], input="a b\n\udcff\n".encode("utf-8", "surrogateescape"),
                         capture_output=True, env=env)
    assert bad.returncode == 2 and bad.stderr.decode().strip().endswith(
        "elman: error: /dev/stdin: not valid utf-8: byte 0xff at offset 4 (line 2); pass --encoding if the file "
        "uses another one")
