"""Learning curves on the KJV demo split: validation perplexity against wall
time for elman's defaults, Mikolov's RNNLM and faster-rnnlm, each trained with
the commands of PEERS.md, then its test perplexity. A benchmark, not a test.

    python bench/learning_curves.py run  [--systems elman,rnnlm,faster-rnnlm] [--lock FILE]
    python bench/learning_curves.py plot [--csv F] [--out F.svg] [--caption TEXT]

`run` starts each system's training as a child process and stamps every line
it prints with the wall time since the process started (so reading the corpus
counts, as it does for a user); each epoch's validation figure becomes one CSV
row. The systems run one after another, never side by side; with `--lock FILE`
each training holds an exclusive lock on FILE (the test evaluations, untimed, do not) (a shared machine's
benchmark lock). The peers print entropies in bits (ppl = 2^entropy); elman
prints perplexities. Rows go to docs/benchmarks/data/learning_curves.csv:

    system,epoch,wall_s,cpu_s,valid_ppl,test_ppl,dynamic_ppl   (test and dynamic on the last row only)

cpu_s is the training process's own CPU time (all its threads, user +
system) at that line: on a machine shared with other work it says what the
run cost where the wall time says what it took.
"""
from __future__ import annotations

import argparse
import csv
import fcntl
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "docs" / "benchmarks" / "data" / "learning_curves.csv"
SVG = ROOT / "docs" / "benchmarks" / "img" / "learning_curves.svg"
FIELDS = ["system", "epoch", "wall_s", "cpu_s", "valid_ppl", "test_ppl", "dynamic_ppl"]
PEERS = Path(os.environ.get("ELMAN_PEERS", "/work/peers/bin"))

# How each system reports a validation figure: (pattern, to perplexity).
VALID = {
    "elman": (re.compile(r"valid ppl\s+([0-9.]+)"), float),
    "rnnlm": (re.compile(r"VALID entropy:\s+([0-9.]+)"), lambda bits: 2 ** float(bits)),
    # (its "Initial entropy (bits) valid:" is the untrained net's, before the first epoch)
    "faster-rnnlm": (re.compile(r"^(?!Initial).*valid:\s+([0-9.]+)"), lambda bits: 2 ** float(bits)),
}


def commands(system: str, data: Path, work: Path) -> tuple[list, list, list | None]:
    """(train, test, dynamic test) command lines, as PEERS.md and the docs give them."""
    train, valid, test = (str(data / f) for f in ("train.txt", "valid.txt", "test.txt"))
    model = str(work / system)
    if system == "elman":
        elman = [sys.executable, "-m", "elman"]
        return ([*elman, "train", "--train", train, "--valid", valid, "--out", model],
                [*elman, "eval", "--model", model, "--data", test],
                [*elman, "eval", "--model", model, "--data", test, "--dynamic"])
    if system == "rnnlm":
        rnnlm = str(PEERS / "rnnlm")
        return ([rnnlm, "-train", train, "-valid", valid, "-rnnlm", model, "-hidden", "200", "-class", "100",
                 "-bptt", "4", "-bptt-block", "10", "-rand-seed", "1"],
                [rnnlm, "-rnnlm", model, "-test", test],
                [rnnlm, "-rnnlm", model, "-test", test, "-dynamic", "0.1"])
    if system == "faster-rnnlm":
        fr = str(PEERS / "faster-rnnlm")
        return ([fr, "-rnnlm", model, "-train", train, "-valid", valid, "-hidden", "200", "-hidden-type",
                 "sigmoid", "-threads", "1", "-bptt", "4", "-bptt-block", "10", "-seed", "1"],
                [fr, "-rnnlm", model, "-test", test], None)
    raise SystemExit(f"unknown system {system!r}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def stamped_lines(argv: list) -> tuple[list[tuple[float, float, str]], float]:
    """Run argv; every line of its stdout and stderr (split at \\n and \\r) with its wall and CPU time."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
    lines, pending = [], b""
    while chunk := proc.stdout.read(4096):
        now, cpu = time.perf_counter() - start, cpu_seconds(proc.pid)
        pending += chunk
        *done, pending = re.split(rb"[\r\n]", pending)
        lines += [(now, cpu, d.decode("utf-8", "replace")) for d in done if d.strip()]
    if pending.strip():
        lines.append((time.perf_counter() - start, float("nan"), pending.decode("utf-8", "replace")))
    if proc.wait():
        raise SystemExit(f"{argv[0]} exited {proc.returncode}:\n" + "\n".join(t for *_, t in lines[-20:]))
    return lines, time.perf_counter() - start


def test_ppl(system: str, argv: list) -> float:
    """The test perplexity a system's test command prints."""
    text = "\n".join(t for *_, t in stamped_lines(argv)[0])
    pattern = {"elman": r"perplexity\D*([0-9.]+)", "rnnlm": r"PPL net:\s*([0-9.]+)",
               "faster-rnnlm": r"Test entropy\s*([0-9.]+)"}[system]
    found = re.findall(pattern, text)
    if not found:
        raise SystemExit(f"{system}: no test figure in:\n{text}")
    value = float(found[-1])
    return 2 ** value if system == "faster-rnnlm" else value


@contextmanager
def held(lock: str | None):
    if lock is None:
        yield
        return
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_system(system: str, data: Path, work: Path, lock: str | None) -> list[dict]:
    """Train (the timed part, under the lock), then evaluate on the test text."""
    train, test, dynamic = commands(system, data, work)
    with held(lock):
        lines, wall = stamped_lines(train)
    pattern, to_ppl = VALID[system]
    rows = []
    for t, cpu, text in lines:
        if m := pattern.search(text):
            rows.append({"system": system, "epoch": len(rows) + 1, "wall_s": f"{t:.1f}", "cpu_s": f"{cpu:.1f}",
                         "valid_ppl": f"{to_ppl(m.group(1)):.2f}", "test_ppl": "", "dynamic_ppl": ""})
    if not rows:
        raise SystemExit(f"{system}: no validation figure in its output")
    rows[-1]["wall_s"] = f"{wall:.1f}"
    rows[-1]["test_ppl"] = f"{test_ppl(system, test):.2f}"
    if dynamic:
        rows[-1]["dynamic_ppl"] = f"{test_ppl(system, dynamic):.2f}"
    print(f"{system}: {len(rows)} epochs, {wall:.1f} s, test {rows[-1]['test_ppl']}", flush=True)
    return rows


def replace_rows(path: Path, fields: list[str], rows: list[dict], keep) -> None:
    """Write the CSV atomically: its old rows for which keep(row) holds, then ``rows``."""
    old = []
    if path.exists():
        with open(path, newline="") as f:
            old = [r for r in csv.DictReader(f) if keep(r)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(old + rows)
    os.replace(tmp, path)


def write_csv(rows: list[dict], path: Path) -> None:
    """Replace the given systems' rows in the CSV, keeping the others'."""
    systems = {r["system"] for r in rows}
    replace_rows(path, FIELDS, rows, lambda r: r["system"] not in systems)


def save(fig, out: Path, caption: str) -> None:
    """The figure, its caption (machine, date, load) under it, to ``out``."""
    if caption:
        lines = textwrap.wrap(caption, 120)
        fig.text(0.01, 0.01, "\n".join(lines), fontsize=7)
        fig.subplots_adjust(bottom=0.16 + 0.03 * len(lines))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, metadata={"Date": None})
    print(out)


def parsers(doc: str, csv_path: Path, svg_path: Path):
    """(the parser, its `run` subparser): `run` and `plot`, with --lock, --csv, --out and --caption."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--lock", default=None, help="hold an exclusive lock on this file during each timed run")
    r.add_argument("--csv", type=Path, default=csv_path)
    p = sub.add_parser("plot")
    p.add_argument("--csv", type=Path, default=csv_path)
    p.add_argument("--out", type=Path, default=svg_path)
    p.add_argument("--caption", default="")
    return ap, r


def plot(csv_path: Path, out: Path, caption: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for system in dict.fromkeys(r["system"] for r in rows):
        mine = [r for r in rows if r["system"] == system]
        x = [float(r["wall_s"]) / 60 for r in mine]
        y = [float(r["valid_ppl"]) for r in mine]
        label = f"{system} (test {mine[-1]['test_ppl']})"
        ax.plot(x, y, "o-", markersize=3, label=label)
    ax.set_xlabel("wall time, minutes (process start to each validation)")
    ax.set_ylabel("validation perplexity")
    ax.set_ylim(top=min(120, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("KJV demo split, d = Dh = 200, one process each", fontsize=10)
    save(fig, out, caption)


def main(argv=None) -> None:
    ap, r = parsers(__doc__, CSV, SVG)
    r.add_argument("--systems", default="elman,rnnlm,faster-rnnlm")
    r.add_argument("--data", type=Path, default=None, help="default: the demo split, built if missing")
    a = ap.parse_args(argv)
    if a.cmd == "plot":
        return plot(a.csv, a.out, a.caption)
    if a.data is None:
        from elman.data.kjv import build_kjv_corpus
        a.data = build_kjv_corpus()["train"].parent
    with tempfile.TemporaryDirectory(prefix="elman-curves-") as work:
        for system in a.systems.split(","):
            write_csv(run_system(system, a.data, Path(work), a.lock), a.csv)


if __name__ == "__main__":
    main()
