"""Perplexity of a text, log-probability of each line, and sampling.

Conventions (the README's "Evaluating, scoring, sampling" repeats them):

* ``perplexity``: the text is one stream. h0 = 0, the word before the first
  token is ``<eos>``, every token (each line's ``<eos>`` included) is
  predicted, unknown words count as ``<unk>``. The stream is run in windows
  of ``window`` steps with the state carried across them, which is the same
  computation as one token at a time; it is *not* split into B parallel
  streams, since each would restart from h0 = 0 and see less context.
* ``line_log10_probs``: each line on its own, from h0 = 0 after ``<eos>``,
  scoring its words and its ``<eos>`` (RNNLM's ``-test`` for n-best lists).
  Lines are padded and run together for speed; the recurrence is causal, so
  what follows a line's end cannot change its score.
"""
from __future__ import annotations

import math

import numpy as np

from elman import data, modelfile
from elman.errors import ElmanError
from elman.core.model import Params, forward_losses, output_probs, rnn_step
from elman.core.perplexity import perplexity, stream_losses, summary  # noqa: F401  (eval's own functions)

LN10 = math.log(10.0)


def load(model_dir):
    """``(Params, Vocab, config)`` of a saved model; every problem is one ElmanError."""
    return modelfile.load_params(model_dir)


def read_ids(path, vocab, cfg: dict, encoding: str | None = None) -> np.ndarray:
    """The ids of a text file read as the model was trained (level, encoding)."""
    tokens = data.read_tokens(path, cfg.get("level", "word"), encoding or cfg.get("encoding", "utf-8"))
    return vocab.encode(tokens)


def read_line_ids(path, vocab, cfg: dict, encoding: str | None = None) -> list:
    """One id array per line of the file, each ending in ``<eos>``.

    Unlike training and ``perplexity``, a blank line is kept (as just
    ``<eos>``, an empty sentence) so that scores stay aligned with the lines
    of an n-best list."""
    level = cfg.get("level", "word")
    text = data.read_text(path, encoding or cfg.get("encoding", "utf-8"))
    lines = data.text_lines(text)
    if lines and lines[-1] == "":
        lines.pop()  # the newline ending the last line does not start another
    if not any(line.strip() for line in lines):
        raise ElmanError(f"{path}: empty or whitespace-only file, no text to score")
    return [vocab.encode(data.line_tokens(line, level) + [data.EOS]) for line in lines]


def line_log10_probs(p, lines, eos_id: int, batch: int = 64) -> np.ndarray:
    """log10 P(line) for each line (an id array ending in ``<eos>``), each
    from h0 = 0 with ``<eos>`` as the word before it."""
    scores = np.empty(len(lines))
    # Sorted by length so that a batch wastes little work on padding.
    order = sorted(range(len(lines)), key=lambda i: len(lines[i]))
    for s in range(0, len(order), batch):
        chunk = order[s:s + batch]
        width = len(lines[chunk[-1]])
        y = np.full((len(chunk), width), eos_id, dtype=np.int64)
        mask = np.zeros((len(chunk), width), dtype=bool)
        for row, i in enumerate(chunk):
            y[row, :len(lines[i])] = lines[i]
            mask[row, :len(lines[i])] = True
        x = np.concatenate([np.full((len(chunk), 1), eos_id), y[:, :-1]], axis=1)
        losses, _ = forward_losses(p, x, y, np.zeros((len(chunk), p.Dh), dtype=p.dtype))
        scores[chunk] = -np.where(mask, losses, 0.0).sum(axis=1, dtype=np.float64) / LN10
    return scores


def dynamic_perplexity(p, ids, eos_id: int, lr: float, T: int) -> dict:
    """``perplexity``'s dict for dynamic evaluation (``inference.dynamic``), with
    ``"dynamic": {"lr", "bptt"}``."""
    from elman.inference.dynamic import stream_losses
    return {**summary(stream_losses(p, ids, eos_id, lr, T)), "dynamic": {"lr": lr, "bptt": T}}


def dynamic_line_log10_probs(p, lines, lr: float) -> np.ndarray:
    """``line_log10_probs`` with dynamic evaluation: the lines in order, one step on each after it."""
    from elman.inference.dynamic import line_losses
    return np.array([-losses.sum() / LN10 for losses in line_losses(p, lines, lr)])


def sample(p, prime_ids, eos_id: int, n: int, temperature: float = 1.0, seed: int = 0) -> list:
    """Draw ``n`` word ids after ``<eos>`` and ``prime_ids``.

    Temperature divides the log-probabilities: below 1 sharpens the
    distribution, above 1 flattens it. The same seed gives the same ids.
    """
    rng = np.random.default_rng(seed)
    h = np.zeros((1, p.Dh), dtype=p.dtype)
    read = [-1] * max(p.order - 1, 0) + [eos_id, *prime_ids]     # direct connections read the last N-1
    for x in read[-len(prime_ids) - 1:]:
        h = rnn_step(p, np.array([x]), h)
    out = []
    for _ in range(n):
        context = np.array([read[len(read) - p.order + 1:]]) if p.order else None
        yhat = output_probs(p, h, context)[0].astype(np.float64)
        if temperature != 1.0:
            with np.errstate(divide="ignore"):
                logits = np.log(yhat) / temperature
            yhat = np.exp(logits - logits.max())
        cdf = np.cumsum(yhat)
        x = int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(cdf) - 1))
        out.append(x)
        read.append(x)
        h = rnn_step(p, np.array([x]), h)
    return out


def detokenize(tokens, level: str = "word", eos: str = "<eos>") -> str:
    """Tokens back to text: ``<eos>`` becomes a newline; words are joined by
    spaces, characters by nothing."""
    sep = " " if level == "word" else ""
    lines, current = [], []
    for tok in tokens:
        if tok == eos:
            lines.append(sep.join(current))
            current = []
        else:
            current.append(tok)
    lines.append(sep.join(current))
    return "\n".join(lines)
