"""The training log ``DIR/metrics.jsonl`` and its learning-curve plot.

One JSON object a line: every ``log_every`` batches ``{"epoch", "batch",
"batches", "train_ppl", "lr", "words_per_s", "elapsed"}`` with
``"valid_ppl": null``; at the end of each epoch the same keys with the
validation perplexity filled in (plus ``"restored": true`` when the epoch
was undone by the schedule); after training, when a test file was given,
``{"test_ppl": ...}``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from elman.errors import ElmanError

FILENAME = "metrics.jsonl"


class MetricsLog:
    """Appends lines to ``DIR/metrics.jsonl`` and counts them.

    A resumed run keeps only the lines its checkpoint had counted: lines
    written after the checkpoint describe work that is about to be redone.
    """

    def __init__(self, directory, keep: int | None = None, write: bool = True):
        self.path = Path(directory) / FILENAME
        self.writes = write         # False on the processes of an MPI run other than rank 0
        self.lines = 0
        if write:
            lines = []
            if keep and self.path.exists():
                lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)[:keep]
            self.path.write_text("".join(lines), encoding="utf-8")
            self.lines = len(lines)

    def write(self, **record) -> None:
        if self.writes:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, allow_nan=False) + "\n")
        self.lines += 1


# The fields a plotted record needs, and their types.
_PLOTTED = {"epoch": (int, float), "batch": (int, float), "batches": (int, float), "train_ppl": (int, float)}


def read_metrics(directory) -> list:
    """The records of DIR/metrics.jsonl; a line that is not a JSON object is one ElmanError."""
    path = Path(directory) / FILENAME
    if not path.is_file():
        raise ElmanError(f"{path}: no training log here (elman train writes one into --out)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ElmanError(f"{path}: not UTF-8 (byte offset {exc.start})") from None
    except OSError as exc:
        raise ElmanError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    records = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                record = None
            if not isinstance(record, dict):
                raise ElmanError(f"{path}:{n}: not a JSON object line")
            records.append(record)
    return records


def _plottable(r: dict) -> bool:
    return all(isinstance(r.get(k), t) and not isinstance(r.get(k), bool) for k, t in _PLOTTED.items()) \
        and r["batches"] > 0 and (r.get("valid_ppl") is None or isinstance(r["valid_ppl"], (int, float)))


def plot_learning_curve(directory, out=None) -> Path:
    """Training and validation perplexity against epochs, as a PNG."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ElmanError("plotting needs matplotlib: pip install 'elman[plot]'") from None
    records = [r for r in read_metrics(directory) if _plottable(r)]
    if not records:
        raise ElmanError(f"{Path(directory) / FILENAME}: no training records to plot yet")
    out = Path(out) if out else Path(directory) / "learning-curve.png"

    def progress(r):
        return r["epoch"] - 1 + r["batch"] / r["batches"]

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([progress(r) for r in records], [r["train_ppl"] for r in records],
            label="training (running, per epoch)", color="tab:blue", alpha=0.8)
    valid = [r for r in records if r.get("valid_ppl") is not None]
    ax.plot([progress(r) for r in valid], [r["valid_ppl"] for r in valid], "o-",
            label="validation", color="tab:orange")
    undone = [r for r in valid if r.get("restored")]
    if undone:
        ax.plot([progress(r) for r in undone], [r["valid_ppl"] for r in undone], "x", color="tab:red",
                markersize=9, label="validation worse: epoch undone")
    ppls = [r["train_ppl"] for r in records] + [r["valid_ppl"] for r in valid]
    if max(ppls) / min(ppls) > 10 and all(math.isfinite(v) for v in ppls):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_title(f"elman: {Path(directory).resolve().name}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=120)
    except OSError as exc:
        raise ElmanError(f"{out}: cannot write the plot ({exc.strerror})") from None
    finally:
        plt.close(fig)
    return out
