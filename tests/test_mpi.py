"""`mpiexec -n 2 elman train`: the one-process model, one writer, faults, one-line errors.

These run real MPI jobs with MPICH's launcher from the `mpi` extra (which
`make test` installs, so CI runs them). Small models, a few seconds each.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from elman import modelfile
from helpers import write_corpus

SRC = str(Path(__file__).resolve().parents[1] / "src")
MPIEXEC = Path(sys.executable).parent / "mpiexec"          # the mpich wheel's, beside this Python
try:
    import mpi4py  # noqa: F401
    HAVE_MPI = MPIEXEC.exists()
except ImportError:
    HAVE_MPI = False
if not HAVE_MPI and not os.environ.get("CI"):  # CI installs the mpi extra: there these must run
    pytest.skip("needs the mpi extra (pip install 'elman[mpi]')", allow_module_level=True)

ARGS = ["--hidden", "12", "--embed", "10", "--batch", "4", "--bptt", "6", "--epochs", "2",
        "--sampled", "5", "--dropout", "0.2", "--direct", "0.01", "--direct-order", "3",
        "--checkpoint-every", "10", "--log-every", "50"]
BOUND = 1e-4   # max|difference| / max|value| per tensor; measured 8.4e-7 (docs/benchmarks/mpi.md)


def _env(**extra):
    return {**os.environ, "PYTHONPATH": SRC, **extra}


def _elman(n, *args, env=None):
    """The command line of `elman` on n processes (n = 0: no mpiexec at all)."""
    cmd = [sys.executable, "-m", "elman", *map(str, args)]
    return cmd if n == 0 else [str(MPIEXEC), "-n", str(n), *cmd]


def _run(n, *args, env=None, timeout=120):
    return subprocess.run(_elman(n, *args), env=env or _env(), capture_output=True, text=True, timeout=timeout)


def _tensors(out: Path) -> dict:
    params, _, _, optimizer = modelfile.load_checkpoint(out, "last")
    return {**params, **{f"opt.{k}": v for k, v in optimizer.items()}}


def _worst(a: Path, b: Path) -> float:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    return max(float(np.abs(ta[k] - tb[k]).max() / max(np.abs(ta[k]).max(), 1e-30)) for k in ta)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("mpi")
    tr, va = write_corpus(d, lines=2000)
    return d, ["--train", tr, "--valid", va]


@pytest.fixture(scope="module")
def one(corpus):
    d, files = corpus
    r = _run(0, "train", *files, *ARGS, "--out", d / "one", "--quiet")
    assert r.returncode == 0, r.stderr
    return d / "one"


@pytest.fixture(scope="module")
def two(corpus):
    d, files = corpus
    r = _run(2, "train", *files, *ARGS, "--out", d / "two")       # one machine: shared memory (nodesync)
    assert r.returncode == 0, r.stderr
    return d / "two", r.stderr


def test_two_processes_train_the_one_process_model(one, two, corpus):
    out, err = two
    worst = _worst(one, out)
    print(f"max |diff| / max |value| over every tensor: {worst:.2e}")
    assert worst <= BOUND
    assert 0 < worst, "two processes add in another order: the same bits would mean one did all the work"
    cfg = json.loads((out / "last" / "config.json").read_text())
    assert cfg["settings"]["processes"] == 2 and cfg["train_state"]["comm"]["exchange"] == "shared memory"
    # Rank 0 alone speaks and writes: each epoch line once, each metrics row once.
    assert len(re.findall(r"^epoch +1 ", err, re.M)) == 1 and len(re.findall(r"^epoch +2 ", err, re.M)) == 1
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["epoch"], r["batch"]) for r in rows]
    assert len(keys) == len(set(keys)) and rows[-1]["exchange"]["allreduce_bytes"] > 0


def _zipf_corpus(directory: Path, types: int, lines: int) -> list:
    """Lines of Zipf-distributed words: many rare words, each in few windows."""
    rng = np.random.default_rng(0)
    words, p = np.array([f"w{i}" for i in range(types)]), 1 / np.arange(1, types + 1)
    text = [" ".join(rng.choice(words, rng.integers(4, 12), p=p / p.sum())) for _ in range(lines)]
    cut = lines * 9 // 10
    (directory / "train.txt").write_text("\n".join(text[:cut]) + "\n")
    (directory / "valid.txt").write_text("\n".join(text[cut:]) + "\n")
    return ["--train", directory / "train.txt", "--valid", directory / "valid.txt"]


def test_the_defaults_train_one_model_whatever_the_number_of_processes(tmp_path):
    """elman train's defaults (Adagrad, sampled softmax, direct connections,
    dropout) on a vocabulary of rare words: a rare word's row has a gradient
    whose sum over the processes may be zero but for rounding, and Adagrad
    must not make that a full step (its G0). Measured 2.9e-6 after two
    epochs; 9.0e-4 with G0 = 0, which this bound (ten times tighter than
    the 1e-3 asked of the defaults) refuses."""
    files = _zipf_corpus(tmp_path, 3000, 3000)
    args = [*files, "--hidden", "16", "--embed", "12", "--batch", "8", "--bptt", "10", "--epochs", "2", "--quiet"]
    for n in (0, 2):
        r = _run(n, "train", *args, "--out", tmp_path / str(n))
        assert r.returncode == 0, r.stderr
    assert _worst(tmp_path / "0", tmp_path / "2") <= 1e-4


@pytest.mark.parametrize("recipe", [["--sampled", "5", "--dropout", "0.2", "--direct", "0.01"],
                                    ["--sampled", "0", "--dropout", "0", "--direct", "0"]])
def test_plain_sgd_on_two_processes_is_one_process_to_float32_rounding(corpus, tmp_path, recipe):
    """A short run (20 windows) of SGD: each step's sum in another order, no
    more; measured at most 8.1e-7 (the direct weights' steps from the parts
    one after the other included)."""
    d, files = corpus
    short = tmp_path / "train.txt"
    short.write_text("".join(Path(files[1]).read_text().splitlines(keepends=True)[:100]))
    args = ["--train", short, "--valid", files[3], *ARGS[:8], "--epochs", "1", "--optimizer", "sgd", *recipe, "--quiet"]
    for n in (0, 2):
        r = _run(n, "train", *args, "--out", tmp_path / str(n))
        assert r.returncode == 0, r.stderr
    assert 0 < _worst(tmp_path / "0", tmp_path / "2") <= 2e-6


def test_validation_is_elman_eval_to_the_last_digit(tmp_path):
    """800 word types: `elman eval` cuts the vocabulary into several column
    chunks, so rank 0 (one thread while training) must validate the same way."""
    rng = np.random.default_rng(0)
    words, p = np.array([f"w{i}" for i in range(800)]), 1 / np.arange(1, 801)
    lines = [" ".join(rng.choice(words, rng.integers(4, 12), p=p / p.sum())) for _ in range(1000)]
    (tmp_path / "train.txt").write_text("\n".join(lines[:800]) + "\n")
    (tmp_path / "valid.txt").write_text("\n".join(lines[800:]) + "\n")
    files = ["--train", tmp_path / "train.txt", "--valid", tmp_path / "valid.txt"]
    r = _run(2, "train", *files, *ARGS[:8], "--epochs", "1", "--out", tmp_path / "m", "--quiet")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    ev = _run(0, "eval", "--model", tmp_path / "m", "--data", tmp_path / "valid.txt", "--json")
    assert json.loads(ev.stdout)["perplexity"] == rows[-1]["valid_ppl"]


@pytest.mark.parametrize("exchange", ["mpi", "shared memory", "whole copies"])
def test_the_dense_path_and_the_class_softmax(corpus, tmp_path, exchange):
    """The sparse gradients densified: into MPI's all-reduce (as between
    machines), or summed as dense tensors in shared memory, each process
    updating its slice of the one copy of the weights or (whole copies) all
    of its own copy; a class softmax's U (its columns laid out word by
    word) and direct connections."""
    _, files = corpus
    args = [*files, *ARGS[:8], "--epochs", "1", "--classes", "3", "--dropout", "0.2", "--direct", "0.01"]
    assert _run(0, "train", *args, "--out", tmp_path / "a", "--quiet").returncode == 0
    env = _env(ELMAN_SPARSE_REDUCE="dense", **({"ELMAN_EXCHANGE": "mpi"} if exchange == "mpi" else {}),
               **({"ELMAN_SLICES": "off"} if exchange == "whole copies" else {}))
    r = _run(2, "train", *args, "--out", tmp_path / "b", "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    assert _worst(tmp_path / "a", tmp_path / "b") <= BOUND
    cfg = json.loads((tmp_path / "b" / "last" / "config.json").read_text())
    assert cfg["train_state"]["comm"]["exchange"] == ("mpi" if exchange == "mpi" else "shared memory")


@pytest.mark.parametrize("n,optimizer", [(2, "adagrad"), (3, "sgd")])
def test_a_class_softmax_sums_its_factors_not_its_arrays(corpus, tmp_path, n, optimizer):
    """On one machine a class softmax's dJ/dU goes as its factors
    (``training.nodeproduct``), each process stepping its span of U's
    columns from every process's rows: the one-process model to rounding,
    as the processes' arrays summed (ELMAN_SPARSE_REDUCE=dense) are.
    Measured 8.8e-7 (Adagrad, 2 processes) and 7.2e-6 (SGD, 3), the arrays 7.1e-7 and 1.1e-5."""
    _, files = corpus
    args = [*files, *ARGS[:4], "--batch", "6", *ARGS[6:8], "--epochs", "1", "--classes", "5",
            "--optimizer", optimizer, "--dropout", "0.2", "--direct", "0.01", "--quiet"]
    assert _run(0, "train", *args, "--out", tmp_path / "one").returncode == 0
    for way, env in (("factors", _env()), ("arrays", _env(ELMAN_SPARSE_REDUCE="dense"))):
        r = _run(n, "train", *args, "--out", tmp_path / way, env=env)
        assert r.returncode == 0, r.stderr
        worst = _worst(tmp_path / "one", tmp_path / way)
        print(f"{n} processes, {optimizer}, {way}: {worst:.2e}")
        assert 0 < worst <= BOUND
        row = json.loads((tmp_path / way / "metrics.jsonl").read_text().splitlines()[-1])
        assert row["exchange"].get("factored") == ({"U": 1.0} if way == "factors" else None)
    assert _worst(tmp_path / "factors", tmp_path / "arrays") <= BOUND


@pytest.mark.parametrize("optimizer", ["adam", "lazyadam"])
def test_adam_on_slices_moves_each_entry_once(corpus, tmp_path, optimizer):
    """Adam moves every entry of a tensor each update (its moments decay):
    each process must move only its slice of the shared weights, or entries
    would take two steps; LazyAdam moves only the rows a gradient holds."""
    _, files = corpus
    args = [*files, *ARGS[:8], "--epochs", "1", "--optimizer", optimizer, "--dropout", "0.2", "--direct", "0.01"]
    for n in (0, 2):
        r = _run(n, "train", *args, "--out", tmp_path / str(n), "--quiet")
        assert r.returncode == 0, r.stderr
    assert _worst(tmp_path / "0", tmp_path / "2") <= BOUND


def _progress(out: Path):
    try:
        return json.loads((out / "last" / "config.json").read_text())["train_state"]["progress"]
    except (OSError, ValueError, KeyError):
        return None


def _start_and_wait(cmd, out: Path, env=None):
    """Start ``cmd`` and return it once a checkpoint 30 windows into epoch 1 exists."""
    proc = subprocess.Popen(cmd, env=env or _env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ((p := _progress(out)) and p["epoch"] == 1 and p["windows_done"] >= 30):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.005)
    return proc


@pytest.mark.parametrize("exchange", ["mpi", "shared memory"])
def test_a_killed_rank_stops_the_job_and_the_resumed_run_is_bit_for_bit(two, corpus, tmp_path, exchange):
    """Killed and resumed, through MPI's collectives (sparse rows all-gathered)
    as between machines, or through shared memory, each process updating
    its slice of the one copy of the weights: the same bits as the
    uninterrupted run of the same exchange."""
    out = tmp_path / "killed"
    mpi = _env(ELMAN_EXCHANGE="mpi", ELMAN_SPARSE_REDUCE="gather") if exchange == "mpi" else _env()
    if exchange == "mpi":
        ref = tmp_path / "uninterrupted"
        r = _run(2, "train", *corpus[1], *ARGS, "--out", ref, "--quiet", env=mpi)
        assert r.returncode == 0, r.stderr
    else:
        ref, _ = two
    proc = _start_and_wait(_elman(2, "train", *corpus[1], *ARGS, "--out", out), out, env=mpi)
    time.sleep(0.2)
    line = next(x for x in iter(proc.stderr.readline, "") if "processes," in x)
    pid = int(re.search(r"1: \S+ pid (\d+)", line).group(1))
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    proc.wait(timeout=60)
    assert proc.returncode != 0 and time.monotonic() - t0 < 60
    modelfile.load_checkpoint(out, "last")          # the last checkpoint is whole
    r = _run(2, "train", "--out", out, "--resume", "--quiet", env=mpi)
    assert r.returncode == 0, r.stderr
    a, b = _tensors(ref), _tensors(out)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_ctrl_c_saves_once_and_another_process_count_resumes(one, corpus, tmp_path):
    out = tmp_path / "stopped"
    proc = _start_and_wait(_elman(2, "train", *corpus[1], *ARGS, "--out", out), out)
    proc.send_signal(signal.SIGINT)                  # what Ctrl-C sends mpiexec
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    assert err.count("saving a checkpoint after this step") == 1 and err.count("saved a checkpoint") == 1, err
    assert "mpiexec -n 2 elman train --out" in err
    stopped = _progress(out)
    assert stopped["epoch"] == 1 and 0 < stopped["windows_done"]
    # Resumed on one process: the hidden state of both processes' streams goes to the one.
    r = _run(0, "train", "--out", out, "--resume", "--quiet")
    assert r.returncode == 0, r.stderr
    assert _worst(one, out) <= BOUND


def _one_line(r):
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_mpiexec_without_mpi4py_is_one_line(corpus, tmp_path):
    hide = tmp_path / "hide" / "mpi4py"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError('hidden for this test')\n")
    r = _run(2, "train", *corpus[1], "--out", tmp_path / "m", env=_env(PYTHONPATH=f"{hide.parent}:{SRC}"))
    assert "mpi4py is not installed" in _one_line(r)


def test_mismatched_options_and_an_indivisible_batch_are_one_line(corpus, tmp_path):
    out = tmp_path / "m"
    cmd = _elman(1, "train", *corpus[1], "--out", out, "--hidden", "8")
    cmd += [":", "-n", "1", *_elman(0, "train", *corpus[1], "--out", out, "--hidden", "9")]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=60)
    assert "hidden is 8 on process 0 but 9 on process 1" in _one_line(r)
    assert "2 processes cannot share 5 streams" in _one_line(_run(2, "train", *corpus[1], "--out", out,
                                                                 "--batch", "5"))
    assert not out.exists()                           # refused before any work


def test_threads_per_process(tmp_path):
    code = "from elman.training import distributed; from elman.fast import threads; " \
           "c = distributed.connect(); every = c._allgather_json(threads.THREADS); c.writer and print(every)"

    def threads(**env):
        r = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, "-c", code],
                           env=_env(**env), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    cores = len(os.sched_getaffinity(0))
    assert threads() == [max(1, cores // 2)] * 2       # not bound to cores: the machine's shared out
    assert threads(ELMAN_THREADS="3") == [3, 3]


def test_rank_0_knows_whether_the_launcher_writes_to_a_terminal():
    """Rank 0's stderr is a pipe to mpiexec; its progress bar asks mpiexec's."""
    import pty
    code = "from elman.training.distributed import launcher_on_terminal as t; print(t())"
    for terminal in (True, False):
        main, child = pty.openpty() if terminal else (None, subprocess.PIPE)
        r = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, "-c", code], env=_env(),
                           stdout=subprocess.PIPE, stderr=child, text=True, timeout=60)
        if terminal:
            os.close(main), os.close(child)
        # the launcher may forward the two ranks' lines into one ("TrueTrue")
        assert r.returncode == 0 and re.findall("True|False", r.stdout) == [str(terminal)] * 2, (r.returncode, r.stdout)


def test_bench_processes_runs_both_jobs_and_models_the_cluster():
    """Not a speed test: the bench's jobs run the trainer's update and report what the model needs."""
    r = _run(0, "bench", "--processes", "2", "--V", "300", "--d", "8", "--Dh", "8", "--B", "4", "--T", "5",
             "--steps", "2", "--rounds", "1", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["dense_bytes"] == 4 * (8 * 8 + 8 * 8 + 8 + 8 * 300 + 300)     # I, H, b1, U, b2 (L is sparse)
    assert 0 < res["sparse_bytes"] <= 2 * 5 * (8 * 4 + 8) and res["sparse_dense_bytes"] == 4 * 300 * 8
    assert [row["N"] for row in res["model"]] == [1, 2, 4, 8, 16, 32, 64]
    assert res["model"][0]["10 Gbit/s"] == res["one_words_s"]
    assert res["model"][-1]["100 Gbit/s"] > res["model"][-1]["10 Gbit/s"] > res["one_words_s"]


@pytest.mark.parametrize("recipe", [["--recipe", "--sampled", "20", "--direct", "0.01"],
                                    ["--classes", "4", "--direct", "0.01", "--dropout", "0.25"]])
def test_bench_processes_takes_the_options_of_elman_train(recipe):
    """The trainer's update with the recipe or a class softmax; each
    process's share of the sparse gradients (the direct weights' among
    them) is what the model of other machines reads."""
    r = _run(0, "bench", "--processes", "2", "--V", "300", "--d", "8", "--Dh", "8", "--B", "4", "--T", "5",
             "--steps", "2", "--rounds", "1", *recipe)
    assert r.returncode == 0, r.stderr
    assert "direct M=10000 order 3" in r.stdout and "dropout 0.25" in r.stdout
    sparse = re.search(r"sparse, one process's \(ids, rows\) / dense: (.*)", r.stdout).group(1)
    assert "D " in sparse and "L " in sparse


def test_ranks_build_the_token_id_cache_once_with_forked_tokenisers(tmp_path):
    """Two ranks ask for the same corpus at once: one builds it (its tokeniser
    processes forked from an MPI rank), the other waits and reads it."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"w{i % 97} w{i % 13} x{i % 1001} .\n" for i in range(40_000)))
    code = ("import sys, hashlib; from mpi4py import MPI; from elman.data import corpus_ids; "
            "v, ids = corpus_ids(sys.argv[1], cache_dir=sys.argv[2], say=print, workers=2, part_bytes=1 << 14); "
            "print('rank', MPI.COMM_WORLD.rank, hashlib.sha256(ids.ids.tobytes()).hexdigest(), len(ids), flush=True)")
    out = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, "-c", code, str(corpus), str(tmp_path / "cache")],
                         env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # the launcher forwards two processes' output into one pipe: find each rank's line wherever it falls
    ranks = [list(m) for m in re.findall(r"rank (\d) ([0-9a-f]{64}) (\d+)", out.stdout)]
    assert sorted(r[0] for r in ranks) == ["0", "1"] and len({tuple(r[1:]) for r in ranks}) == 1
    assert int(ranks[0][2]) == 200_000 and out.stdout.count("tokenised") == 1


def test_a_budgets_ramp_is_one_decision_for_every_process(corpus, tmp_path):
    """The ramp reads each process's own clock; rank 0's factor is used by
    all, or the replicas would drift apart (each checkpoint compares them)."""
    out = tmp_path / "m"
    r = _run(2, "train", *corpus[1], *ARGS, "--out", out, "--minutes", "0.15", "--anneal", "4",
             "--checkpoint-every", "5", "--log-every", "5")
    assert r.returncode == 0, r.stderr
    rows = list(map(json.loads, (out / "metrics.jsonl").read_text().splitlines()))
    lrs = [row["lr"] for row in rows if "lr" in row]
    assert min(lrs) < 0.5 * max(lrs)                   # the ramp did lower the rate
    assert {row["dropout"] for row in rows if "dropout" in row} in ({0.0}, {0.2})   # the budget's one decision
