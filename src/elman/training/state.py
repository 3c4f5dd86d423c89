"""What a training run is: its settings, its position, and the objects it
holds. Saved in every checkpoint's config.json, so renames here keep the
names older files used (``LEGACY_NAMES``)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from elman.model import Params
from elman.data import Vocab
from elman.errors import ElmanError
from elman.training.distributed import Local
from elman.training.metrics import MetricsLog
from elman.training.rules import DEFAULT_LR, make_optimizer
from elman.training.schedule import Schedule


SAMPLED = 1000        # the default S of sampled softmax
DIRECT = 16.0         # the default size of the direct connections, millions of weights: a class
                      # softmax's class windows share the table, and on KJV 16M gave 2.5% lower
                      # perplexity than 2M (docs/benchmarks/recipes.md, "The direct table's size")
DIRECT_PER_WORD = 1600  # below 10k words, the default table is this many weights a word
DROPOUT_EPOCHS = 5    # a --minutes budget holding fewer epochs trains without dropout: on KJV it cost 1.6
                      # points of test perplexity in 1.9 epochs and 0.7 in 3.6, and gained 0.5 in 5.9
                      # (docs/benchmarks/recipes.md, "Dropout under a budget")


def default_classes(V: int) -> int:
    """K of the defaults' class softmax: round(√V/2) (50 for 10k words, 447
    for 800k), where the expected K + |c(y)| over the training tokens is least
    with classes binned on count^0.5. Measured on KJV and WikiText-2:
    docs/benchmarks/scoring.md, "The number of classes"."""
    return max(1, min(V, int(round(math.sqrt(V) / 2))))


@dataclass
class Settings:
    """Everything that defines a training run (saved in config.json). These
    defaults are the CLI's: its help text reads them from here."""
    train: str
    valid: str
    test: str | None = None
    level: str = "word"
    encoding: str = "utf-8"
    max_vocab: int | None = None
    min_count: int = 1
    hidden: int = 200
    embed: int = 200
    streams: int = 64                 # B: parallel streams (--batch); 64 reached 32's perplexity on KJV
                                      # in 0.8 of its time (docs/benchmarks/recipes.md, "B = 64 against B = 32")
    steps: int = 10                   # T: steps per window (--bptt); 10, twice the updates of 20 an
                                      # epoch, learns more an epoch and as well in the end (README, "Recipes")
    # From here to direct_lr the defaults are the best KJV recipe measured:
    # README, "Recipes measured on KJV", has a row for each choice.
    epochs: int = 14
    optimizer: str = "adagrad"       # measured best (README, "Training")
    lr: float | None = None          # None: DEFAULT_LR of the optimizer
    clip: float = 5.0
    min_improvement: float = 0.003
    anneal: int = 1                   # halve from at the latest N epochs before the end of --epochs;
                                      # under --minutes, ramp the rate to 0 over the last N epochs' time (0: off)
    seed: int = 0
    classes: int | None = None        # K > 0: class-factorised softmax, K frequency-binned classes; 0: the
                                      # full softmax; None: default_classes(V), or 0 under --sampled S > 0
    sampled: int | None = None        # S > 0: sampled softmax, S ids a window (unigram^0.75); None: SAMPLED
                                      # for the full softmax, 0 (the exact one) for classes; S >= V: the full
    dropout: float = 0.25             # rate of dropout on e into the recurrence and h into the output
    direct: float | None = None       # direct connections: millions of hashed n-gram weights (0: none);
                                      # None: DIRECT, fewer or more to fit the vocabulary (fit_vocabulary)
    direct_order: int = 3             # their order N: contexts of 1..N-1 preceding words
    direct_hash: str = "elman"        # how D is hashed: "elman" (core.direct) or "rnnlm" (RNNLM's own,
                                      # core.rnnlm_direct: what export --rnnlm writes)
    direct_lr: float = 0.05           # plain SGD rate of the direct weights, per token (RNNLM's alpha: 0.1)
    checkpoint_every: int = 0         # also checkpoint every N windows (0: epochs only)
    log_every: int = 100              # a metrics line every N windows
    processes: int = 1                # N: MPI processes sharing the B streams (data parallel)

    def __post_init__(self):
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.optimizer, 1.0)
        if self.classes is None and self.sampled:      # --sampled S alone: the full softmax it trains
            self.classes = 0
        if self.sampled is None:
            self.sampled = SAMPLED if self.classes == 0 else 0

    def fit_vocabulary(self, V: int) -> None:
        """Resolve what depends on the vocabulary: the default table size,
        DIRECT million weights, DIRECT_PER_WORD a word below 10k words (a small corpus
        has few n-grams to store), and never under two windows; the classes,
        ``default_classes(V)``."""
        if self.classes is None:
            self.classes = default_classes(V)
        if self.direct is None:
            self.direct = max(min(DIRECT_PER_WORD * V, DIRECT * 1e6), 2 * max(V, self.classes)) / 1e6

    @classmethod
    def from_saved(cls, saved: dict) -> "Settings":
        return cls(**{**LEGACY_VALUES, **_renamed(saved, "settings")})

    @property
    def direct_size(self) -> int:
        """M, the number of direct-connection weights (``direct`` is in millions)."""
        return int(round((self.direct or 0) * 1e6))


# What a run saved before a setting existed did: a field its config.json
# lacks takes this value, not today's default (which may be a newer recipe).
LEGACY_VALUES = {"classes": 0, "direct_hash": "elman", "direct": 0.0, "direct_order": 3, "anneal": 0, "direct_lr": 0.1,
                 "sampled": 0, "dropout": 0.0}


def make_run_optimizer(s: Settings, params: dict):
    """The run's optimizer: ``s.optimizer`` for every tensor but the direct
    weights, which take plain SGD steps at ``s.direct_lr`` per token (the
    trainer hands their gradient as the sum over the window's positions)."""
    plain = {"D": s.direct_lr} if "D" in params else None
    return make_optimizer(s.optimizer, params, s.lr, s.clip, plain)


def default(name: str):
    """The default of a Settings field (for help texts)."""
    return next(f.default for f in fields(Settings) if f.name == name)


# Options a resumed run may change: they do not alter the arithmetic of the
# epochs already done, only how long it goes on and what it records.
# The number of processes changes only the order of float additions.
RESUMABLE = ("epochs", "checkpoint_every", "log_every", "test", "processes")


@dataclass
class Progress:
    """Where the loop is: saved in every checkpoint."""
    epoch: int = 1            # the epoch in progress, 1-based
    windows_done: int = 0     # windows of this epoch already trained
    nats: float = 0.0         # training loss summed over this epoch so far
    tokens: int = 0           # positions in that sum
    elapsed: float = 0.0      # wall seconds over every process that ran it (resumes included)
    epoch_started: float = 0.0  # ``elapsed`` when this epoch began
    metrics_lines: int = 0    # lines of metrics.jsonl this checkpoint accounts for
    stopped: str | None = None  # "schedule", "epochs" or "budget" once finished
    rng: dict = field(default_factory=dict)

    @classmethod
    def from_saved(cls, saved: dict) -> "Progress":
        return cls(**_renamed(saved, "progress"))

    @property
    def train_ppl(self) -> float:
        """Running training perplexity of this epoch (capped: a diverging run
        may reach losses whose exp overflows)."""
        return math.exp(min(self.nats / max(self.tokens, 1), 700.0))


# Keys that files written before a rename hold: section -> {old: new}.
LEGACY_NAMES = {"settings": {"batch": "streams", "bptt": "steps"}, "progress": {"batch": "windows_done"}}


def _renamed(saved: dict, section: str) -> dict:
    if not isinstance(saved, dict):
        raise TypeError(f"the {section} are not a JSON object")
    old = LEGACY_NAMES[section]
    return {old.get(k, k): v for k, v in saved.items()}


class Interrupted(Exception):
    """Ctrl-C during training, after the checkpoint was saved."""


@dataclass
class Run:
    """One training run: its directory, model, optimizer, schedule and position."""
    out: Path
    settings: Settings
    params: Params
    vocab: Vocab
    opt: object
    sched: Schedule
    prog: Progress
    h: np.ndarray = None        # the hidden state carried into the next window
    best: dict = None           # the best weights so far (the schedule restores them)
    metrics: MetricsLog = None
    last_saved: str = "none yet"
    comm: object = None         # training.distributed: Local, or MPIComm for N processes
    comm_state: dict = None     # the saved cost model of the gradient exchange (training.gradsync)
    saver: object = None        # training.rundir.Saver: checkpoints written beside training (None: at once)

    def __post_init__(self):
        if self.comm is None:
            self.comm = Local()

    @property
    def samples(self) -> int:
        """S of the sampled softmax, or 0 for the exact one: S ids drawn from a
        vocabulary of at most S words cost more than all of them."""
        S = self.settings.sampled
        return S if S < len(self.vocab) else 0

    def diverged(self, k: int, why) -> ElmanError:
        # Every process meets a divergence at the same update (the loss and
        # gradients are sums over all of them): rank 0 alone says so.
        return self.comm.fail(f"training diverged at epoch {self.prog.epoch}, batch {k}: {why} (learning rate "
                          f"{self.opt.lr:g}); stopped and kept the last good checkpoint in {self.out} "
                          f"({self.last_saved}); try a smaller --lr")

    def interrupted(self) -> Interrupted:
        launch = f"mpiexec -n {self.comm.size} " if self.comm.size > 1 else ""
        return self.comm.mark(Interrupted(f"elman: interrupted; saved a checkpoint in {self.out} "
                                          f"({self.last_saved}); continue with: {launch}elman train --out "
                                          f"{self.out} --resume"))

    def log(self, nb: int, wps: float, valid_ppl=None, **extra) -> None:
        prog = self.prog
        stats = self.comm.stats()
        if stats:       # N processes: the gradient exchange per update, averaged since this process started
            extra["exchange"] = {"seconds": round(stats["seconds"], 6), "waited": round(stats["waited"], 6),
                                 "allreduce_bytes": round(stats["allreduce_bytes"]),
                                 "allgather_bytes": round(stats["allgather_bytes"]),
                                 **({"factored": stats["factored"]} if stats.get("factored") else {})}
        self.metrics.write(epoch=prog.epoch, batch=prog.windows_done, batches=nb,
                           train_ppl=prog.train_ppl, valid_ppl=valid_ppl,
                           lr=self.opt.lr, words_per_s=round(wps, 1), elapsed=round(prog.elapsed, 3), **extra)

    def summary(self, test=None) -> dict:
        best = self.sched.best
        return {"out": str(self.out), "best_valid_ppl": None if best is None else math.exp(best),
                "best_epoch": self.sched.best_epoch, "test_ppl": test["perplexity"] if test else None,
                "epochs_done": self.prog.epoch - 1, "stopped": self.prog.stopped, "elapsed": self.prog.elapsed}
