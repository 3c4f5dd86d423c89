"""Mikolov's learning-rate schedule (RNNLM toolkit, ``rnnlm.cpp``), one decision per epoch.

After each epoch the validation cross-entropy is compared with the best so
far. While every epoch improves it by at least ``min_improvement`` (a
fraction, 0.003 = 0.3 %), the learning rate stays. The first epoch that
improves less starts halving: the rate is halved after it and after every
epoch that follows; the next epoch that again improves less stops training.

``anneal`` (``elman train --anneal N``): halving starts at the latest when
at most N epochs of ``--epochs`` remain, so a run that would otherwise stop
while still at its first rate gets N halvings, which is where most of the
gain of the schedule comes from. (A ``--minutes`` budget anneals window by
window instead: ``elman.training.budget.rate_ramp``.)

An epoch that made validation *worse* is undone: the weights go back to the
best ones (RNNLM's ``restoreWeights``), so training always continues from,
and ends with, the best model. Only the weights are restored; the
optimizer's running statistics carry on, as RNNLM has none to restore.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Decision:
    improved: bool   # better than the best so far: keep these weights as the best
    restore: bool    # worse than the best: go back to the best weights
    lr: float        # the learning rate for the next epoch
    stop: bool       # training is over


@dataclass
class Schedule:
    lr: float
    min_improvement: float = 0.003
    halving: bool = False
    best: float | None = None       # best validation nats per token
    best_epoch: int | None = None   # 1-based epoch that reached it

    def update(self, epoch: int, valid_nats: float, anneal: bool = False) -> Decision:
        """Record epoch ``epoch`` (1-based) with validation loss ``valid_nats``
        (mean nats per token) and decide what happens next; ``anneal``: start
        halving now if it has not started (few epochs remain)."""
        if self.best is None:
            gain, improved = float("inf"), True
        else:
            gain = (self.best - valid_nats) / self.best
            improved = valid_nats < self.best
        if improved:
            self.best, self.best_epoch = valid_nats, epoch
        stop = False
        if gain < self.min_improvement:
            stop = self.halving
            self.halving = True
        elif anneal:
            self.halving = True
        if self.halving and not stop:
            self.lr /= 2
        return Decision(improved=improved, restore=not improved, lr=self.lr, stop=stop)

    def state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> "Schedule":
        return cls(**state)
