"""ONNX scoring speed: onnxruntime words/s of `elman export --onnx --scores`
(log P of each target only) beside the log_probs graph (every word's log P),
and Mikolov's RNNLM `-test` on the same file. A benchmark, not a test: it
prints and records.

    .venv/bin/python bench/onnx_scoring.py --model MODEL_DIR --data FILE --out DIR \\
        [--rnnlm MODEL_FILE] [--streams 256] [--steps 64] [--threads 0,1] [--log-probs-tokens 20000]

The text is one stream, as `rnnlm -test` and `elman eval` read it (<eos>
first, then each line's words and its <eos>), cut into ``--streams``
contiguous parts of equal length, scored side by side: calls of ``--steps``
positions, h and the history carried from call to call, every part from
the start state (so a part's first words lack the words before it: the
perplexity printed differs from `elman eval`'s by that alone; one part
gives eval's). Words/s: the stream's tokens (each line's words and its end
of line, as both toolkits count them) over the wall time of the calls; the
InferenceSession's creation is timed apart, the CPU time of the calls (every
thread's) beside the wall time. ``--threads``: onnxruntime's
intra_op_num_threads (0: its default, a thread a physical core). The
log_probs graph is timed on the first ``--log-probs-tokens`` positions of
the first ``--log-probs-streams`` parts only (it is slow, and its
[B, T, V] tensors are large). Results go, a JSON line a measurement, to
DIR/results.jsonl (appended). On a busy machine run it on one core as
well: ``taskset -c 0`` with ``--threads 1`` (RNNLM too: the child
inherits the core).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import time
from pathlib import Path

import numpy as np


def stream(vocab, path: Path) -> np.ndarray:
    ids = [[vocab.eos_id]]
    with open(path, encoding="utf-8") as f:
        for line in f:
            ids += [vocab.encode(line.split()), [vocab.eos_id]]
    return np.concatenate(ids).astype(np.int64)


def parts(ids: np.ndarray, B: int, eos: int) -> tuple:
    """(x, y) (B, P): the stream's inputs and targets cut in B rows, the tail padded; n real targets."""
    n = len(ids) - 1
    P = -(-n // B)
    x, y = np.full(B * P, eos, np.int64), np.full(B * P, eos, np.int64)
    x[:n], y[:n] = ids[:-1], ids[1:]
    return x.reshape(B, P), y.reshape(B, P), n


def run(path: Path, x, y, steps: int, threads: int, meta: dict, scores: bool) -> dict:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    start = time.perf_counter()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    created = time.perf_counter() - start
    B, P = x.shape
    h = np.zeros((B, int(meta["hidden_size"])), np.float32)
    if "h_start" in meta:
        h[:] = json.loads(meta["h_start"])
    hist = np.full((B, int(meta.get("history_size", 0))), -1, np.int64)
    direct = "history_size" in meta
    out = np.empty((B, P), np.float32)
    start, cpu = time.perf_counter(), time.process_time()
    for a in range(0, P, steps):
        feeds = {"ids": x[:, a:a + steps], "h0": h}
        if scores:
            feeds["targets"] = y[:, a:a + steps]
        if direct:
            feeds["history"] = hist
        res = sess.run(None, feeds)
        if scores:
            out[:, a:a + steps] = res[0]
        else:
            out[:, a:a + steps] = np.take_along_axis(res[0], y[:, a:a + steps, None], 2)[..., 0]
        h = res[1]
        if direct:
            hist = res[2]
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"create_s": round(created, 3), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "log_prob": out,
            "seconds": wall}


def rnnlm_test(binary: str, model: str, data: Path) -> dict:
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run([binary, "-rnnlm", model, "-test", str(data)], capture_output=True, text=True, check=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    ppl = [line for line in done.stdout.splitlines() if "PPL net" in line]
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "stdout_ppl": ppl[-1].strip() if ppl else None,
            "seconds": wall}


def main() -> int:
    from elman.data import Vocab
    from elman.inference import onnx_export

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--rnnlm", help="an RNNLM model file: time `rnnlm -test` on the same data")
    ap.add_argument("--rnnlm-bin", default="/work/peers/bin/rnnlm")
    ap.add_argument("--streams", type=int, default=256)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--threads", default="0,1")
    ap.add_argument("--log-probs-tokens", type=int, default=20_000, help="0: skip the log_probs graph")
    ap.add_argument("--log-probs-streams", type=int, default=16)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    graphs = {"scores": args.out / "scores" / "lm.onnx", "log_probs": args.out / "log_probs" / "lm.onnx"}
    for kind, path in graphs.items():
        path.parent.mkdir(exist_ok=True)
        meta = onnx_export.export(args.model, path, scores=kind == "scores")
    vocab = Vocab.load(graphs["scores"].parent / "vocab.txt")
    x, y, n = parts(stream(vocab, args.data), args.streams, vocab.eos_id)
    real = (np.arange(x.size) < n).reshape(x.shape)
    common = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": os.getloadavg()[0],
              "model": args.model, "data": str(args.data), "tokens": n, "streams": args.streams, "steps": args.steps}
    rows, first = [], {}
    for threads in (int(t) for t in args.threads.split(",")):
        r = run(graphs["scores"], x, y, args.steps, threads, meta, True)
        lp, seconds = r.pop("log_prob"), r.pop("seconds")    # rates from the unrounded time: a tiny text rounds to 0 s
        first.setdefault("scores", lp)
        rows.append({**common, "graph": "scores", "threads": threads, **r, "words_per_s": round(n / seconds),
                     "ppl": round(float(np.exp(-lp[real].mean())), 3)})
        b = min(args.log_probs_streams, args.streams)
        cols = -(-args.log_probs_tokens // b) // args.steps * args.steps if args.log_probs_tokens else 0
        if cols:
            r = run(graphs["log_probs"], x[:b, :cols], y[:b, :cols], args.steps, threads, meta, False)
            lp, seconds = r.pop("log_prob"), r.pop("seconds")
            diff = float(np.abs(lp - first["scores"][:b, :cols]).max())
            rows.append({**common, "graph": "log_probs", "threads": threads, **r, "tokens": lp.size, "streams": b,
                         "words_per_s": round(lp.size / seconds), "max_abs_diff_vs_scores": diff})
    if args.rnnlm:
        r = rnnlm_test(args.rnnlm_bin, args.rnnlm, args.data)
        seconds = r.pop("seconds")
        rows.append({**common, "graph": "rnnlm -test", **r, "words_per_s": round(n / seconds)})
    with open(args.out / "results.jsonl", "a", encoding="utf-8") as f:
        for row in rows:
            print(json.dumps(row))
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
