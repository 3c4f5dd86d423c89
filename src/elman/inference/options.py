"""What ``elman eval`` and ``elman score`` are asked to do, as typed objects
that ``elman.cli`` builds from the command line (nothing below ``cli``
sees argparse). Standard library only: the CLI imports this for its help
text without loading NumPy.
"""
from __future__ import annotations

from dataclasses import dataclass

# ``--dynamic`` without rates: measured on the KJV validation text (README,
# "Dynamic evaluation"). The direct weights take a rate of their own, as in
# training (``--direct-lr``): an n-gram weight is one context's, and the
# text just read is the best evidence of it. The scaled rule's rate is
# divided by the positions of a training update (B·T): s is the RMS of
# gradients of the mean loss over them, and the best rate on KJV's
# validation text went as 1/(B·T): 2.5e-5 for B·T = 640 (T = 20), 5e-5 for
# 320 (T = 10).
DYNAMIC_DEFAULTS = {"plain": {"lr": 0.02, "decay": 0.01, "direct_lr": 0.2},      # no training statistics
                    "scaled": {"lr": 0.016, "decay": 0.02, "direct_lr": 0.1}}    # steps / sqrt(G / t), Adagrad's


@dataclass(frozen=True)
class Dynamic:
    """How dynamic evaluation learns (``inference.dynamic.settings``): ``how``
    the rule as reported (lr, decay, scaled, and direct_lr with direct
    connections), ``scale`` each weight's RMS training gradient or None
    (plain SGD), ``why`` the rule's reason in words."""
    how: dict
    scale: dict | None
    why: str


@dataclass(frozen=True)
class ScoreOptions:
    """One run of ``score`` (a record per line, then the total) or of
    per-token ``eval`` (the summary only).

    ``format``: the input reader (``inference.readers.READERS``).
    ``carry``: the lines are one stream (eval; score --carry).
    ``per_line``: write a record per line (score), else the summary only (eval).
    ``keep_blank``: a blank line is an empty sentence (score) or is skipped (eval).
    ``lam``: elman's weight against ``ngram`` or ``lm_prob``, a float or "auto"
    (fitted on ``heldout``, with ``heldout_lm_prob`` for ``lm_prob``)."""
    data: str
    format: str = "lines"
    encoding: str | None = None
    carry: bool = False
    per_line: bool = True
    keep_blank: bool = True
    per_token: str | None = None
    ngram: str | None = None
    lm_prob: str | None = None
    lam: float | str | None = None
    heldout: str | None = None
    heldout_lm_prob: str | None = None
    json: bool = False
    dynamic: Dynamic | None = None
