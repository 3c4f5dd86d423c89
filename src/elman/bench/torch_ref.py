"""The same model in PyTorch eager mode, trained by autograd: the yardstick
for ``elman bench --vs-torch``. Imported only when torch is installed
(``pip install 'elman[bench]'``); nothing else in elman needs it.

Written as PyTorch users write it: ``F.embedding``, one ``addmm`` and
``sigmoid`` per time step, ``F.cross_entropy`` (the fused log-softmax and
negative log-likelihood) summed over positions, ``loss.backward()`` and an
in-place SGD update under ``no_grad``. It starts from the same arrays as the
elman model, so both compute the same loss on the same batch.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from elman.model import PARAM_NAMES



class TorchElman:
    """The Elman RNN LM on torch tensors; ``arrays``: elman's ``Params.as_dict()``."""

    def __init__(self, arrays: dict, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.P = {k: torch.tensor(np.array(arrays[k]), requires_grad=True) for k in PARAM_NAMES}

    def _losses(self, inputs, targets, h0, reduction):
        P = self.P
        B, T = inputs.shape
        e = F.embedding(inputs.T.reshape(-1), P["L"])          # time-major rows t*B + b
        a = torch.addmm(P["b1"], e, P["I"]).view(T, B, -1)
        h, hs = h0, []
        for t in range(T):
            h = torch.sigmoid(torch.addmm(a[t], h, P["H"]))
            hs.append(h)
        logits = torch.addmm(P["b2"], torch.stack(hs).view(T * B, -1), P["U"])
        return F.cross_entropy(logits, targets.T.reshape(-1), reduction=reduction), h

    def train_step(self, inputs, targets, h0, lr: float):
        """One forward, backward and SGD update; returns (summed loss, h_last)."""
        loss, h = self._losses(inputs, targets, h0, "sum")
        loss.backward()
        with torch.no_grad():
            for v in self.P.values():
                v.sub_(v.grad, alpha=lr)
                v.grad = None
        return loss.item(), h.detach()

    @torch.no_grad()
    def eval_losses(self, inputs, targets, h0):
        """Per-position losses (B,T) without gradient work, and h_last."""
        losses, h = self._losses(inputs, targets, h0, "none")
        return losses.view(inputs.shape[1], inputs.shape[0]).T, h


def as_tensors(*arrays):
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
