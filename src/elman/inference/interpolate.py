"""Linear interpolation with another language model, token by token, as
Mikolov's RNNLM computes it (``-lm-prob FILE -lambda L``):

    P(w) = λ·P_rnn(w) + (1 − λ)·P_other(w)

for every predicted token, each line's ``<eos>`` included (the other
model's ``</s>``). The other model is an n-gram model (``ngram``) or a
file of per-token probabilities (``LmProbFile``). λ may be fitted by EM on
held-out text (``fit_lambda``).

Sums are kept in natural logs (float64); log10 is only for what is
written, as RNNLM writes it.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from elman.data import EOS
from elman.errors import ElmanError

LN10 = math.log(10.0)


def mix(ln_rnn: np.ndarray, ln_other: np.ndarray, lam: float) -> np.ndarray:
    """ln(λ·P_rnn + (1 − λ)·P_other) per token, from natural logs; λ = 1 or
    0 gives one model's numbers exactly (log 0 = -inf drops the other)."""
    with np.errstate(divide="ignore"):
        return np.logaddexp(math.log(lam) + ln_rnn if lam > 0 else -np.inf,
                            math.log1p(-lam) + ln_other if lam < 1 else -np.inf)


def fit_lambda(ln_rnn: np.ndarray, ln_other: np.ndarray, tol: float = 1e-7, steps: int = 1000) -> tuple:
    """The λ that maximises Σ ln(λ·P_rnn + (1 − λ)·P_other) over held-out
    tokens, by EM: λ ← mean over tokens of the posterior that the token came
    from the RNN, λP_rnn / (λP_rnn + (1 − λ)P_other). Each step cannot lower
    the likelihood (it is concave in λ), so it climbs to the maximum.
    Returns (λ, steps taken)."""
    keep = np.isfinite(ln_rnn) | np.isfinite(ln_other)      # tokens neither model gives any mass say nothing
    ln_rnn, ln_other = ln_rnn[keep], ln_other[keep]
    if not len(ln_rnn):
        raise ElmanError("no held-out token to fit --lambda on")
    lam = 0.5
    for step in range(1, steps + 1):
        a = math.log(lam) + ln_rnn
        new = float(np.mean(np.exp(a - np.logaddexp(a, math.log1p(-lam) + ln_other))))
        new = min(max(new, 1e-12), 1 - 1e-12)                # stay inside (0, 1) for the logs
        done = abs(new - lam) < tol
        lam = new
        if done:
            break
    return lam, step


class Totals:
    """Sums over the predicted tokens for a perplexity: the combined
    model's, and with another model each model's own."""

    def __init__(self, lam=None):
        self.lam = lam
        self.tokens = 0
        self.nats = self.rnn_nats = self.other_nats = 0.0

    def add(self, tokens: int, ln_p, ln_rnn=None, ln_other=None) -> None:
        """``tokens`` more tokens, and the sums of ln P of each of their
        lines (combined, and with another model each model's own), added
        line by line: the totals do not depend on how the lines come."""
        self.tokens += tokens
        for x in np.asarray(ln_p, np.float64).tolist():     # Python floats: the same float64 sums, quicker
            self.nats -= x
        if ln_other is not None:
            for x, y in zip(np.asarray(ln_rnn, np.float64).tolist(), np.asarray(ln_other, np.float64).tolist()):
                self.rnn_nats -= x
                self.other_nats -= y

    @staticmethod
    def _ppl(nats: float, n: int) -> float:
        mean = nats / max(n, 1)
        return math.exp(mean) if mean < 709 else math.inf

    def summary(self) -> dict:
        out = {"perplexity": self._ppl(self.nats, self.tokens), "tokens": self.tokens,
               "bits_per_token": self.nats / max(self.tokens, 1) / math.log(2.0),
               "log10_prob": -self.nats / LN10}
        if self.lam is not None:
            out.update(rnn_perplexity=self._ppl(self.rnn_nats, self.tokens),
                       other_perplexity=self._ppl(self.other_nats, self.tokens), **{"lambda": self.lam})
        return out


# -- a file of per-token probabilities ----------------------------------------------

def _parse_lm_prob(text: str, where: str) -> tuple:
    """(token or None, ln P) of one line: ``token<TAB>log10 P`` (what
    ``--per-token`` writes) or a bare probability (RNNLM's ``-lm-prob``)."""
    token, sep, value = text.rpartition("\t")
    try:
        number = float(value)
    except ValueError:
        raise ElmanError(f"{where}: {value.strip()!r} is not a number (a line is a probability, "
                         "or token<TAB>log10 probability as --per-token writes it)") from None
    if sep:
        if not number <= 0:
            raise ElmanError(f"{where}: log10 probability {value.strip()} is above 0 or not a number")
        return token, number * LN10
    if not 0 <= number <= 1:
        raise ElmanError(f"{where}: probability {value.strip()} is outside [0, 1]")
    with np.errstate(divide="ignore"):
        return None, float(np.log(number))


class LmProbFile:
    """``--lm-prob FILE``: one line per predicted token, in the order they
    are scored. ``check`` reads it whole first, so that a file with the
    wrong number of lines or a bad value is refused before any score is
    written."""

    def __init__(self, path):
        self.path = str(path)
        self._lines = None
        self._number = 0

    def _iter(self):
        from elman.data.stream import iter_lines
        for number, text in enumerate(iter_lines(self.path), 1):
            yield number, _parse_lm_prob(text, f"{self.path}: line {number}")

    def check(self, lines, tokens: int) -> None:
        """Walk the text's ``lines`` and the file together: a bad value, a
        token that is not the text's, or a count that differs is refused now."""
        n = sum(1 for _ in self._iter())
        if n != tokens:
            raise ElmanError(f"{self.path}: {n} lines, but the text has {tokens} predicted tokens "
                             "(each line's tokens and its <eos>): one probability a token")
        for line in lines:
            self.line(line)
        self._lines = None                      # the scoring pass reads it again from the start

    def line(self, line) -> np.ndarray:
        """ln P_other of each of ``line``'s predicted tokens (its tokens, then ``<eos>``)."""
        if self._lines is None:
            self._lines = self._iter()
        out = np.empty(len(line.ids))
        for i, want in enumerate(line.tokens + [EOS]):
            got = next(self._lines, None)
            if got is None:
                raise ElmanError(f"{self.path}: ends before the text does (at its line {line.number})")
            number, (token, out[i]) = got
            if token is not None and token != want:
                raise ElmanError(f"{self.path}: line {number} is for the token {token!r}, but the text has "
                                 f"{want!r} there (line {line.number}); was it written for another text?")
        return out

    def lines(self, lines) -> np.ndarray:
        """``line`` of each of ``lines``, one array."""
        return np.concatenate([self.line(line) for line in lines])


def other_source(ngram=None, lm_prob=None):
    """The other model: an n-gram file (``ngram.NgramModel``) or a per-token file."""
    if ngram is not None:
        from elman.inference.ngram import NgramModel
        return NgramModel(ngram)
    return LmProbFile(lm_prob) if lm_prob is not None else None


def exists(path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ElmanError(f"{path}: no such file ({what})")
    return path
