"""Perplexity of a text, and sampling.

Conventions (the README's "Evaluating, scoring, sampling" repeats them):

* ``perplexity``: the text is one stream. h0 = the model's starting state
  (``model.initial_state``: 0 but for an imported RNNLM model), the word before the first
  token is ``<eos>``, every token (each line's ``<eos>`` included) is
  predicted, unknown words count as ``<unk>``. The stream is run in windows
  of ``window`` steps with the state carried across them, which is the same
  computation as one token at a time; it is *not* split into B parallel
  streams, since each would restart from h0 = 0 and see less context.
* per-line scores (``elman score``) are ``engine`` and ``driver``'s: lines
  read as they come, each from h0 = 0 or carried, in bounded memory.
"""
from __future__ import annotations

import numpy as np

from elman import data, modelfile, progress
from elman.model import perplexity as _perplexity
from elman.model import initial_state, output_probs, rnn_step
from elman.model.perplexity import stream_losses, summary  # noqa: F401  (eval's own functions)


def load(model_dir):
    """``(Params, Vocab, config)`` of a saved model; every problem is one ElmanError."""
    return modelfile.load_params(model_dir)


def read_ids(path, vocab, cfg: dict, encoding: str | None = None, cache_dir=None, say=None) -> data.TokenIds:
    """The ids of a text file read as the model was trained (level, encoding),
    through the token-id cache."""
    return data.corpus_ids(path, cfg.get("level", "word"), encoding or cfg.get("encoding", "utf-8"), vocab=vocab,
                           cache_dir=cache_dir, say=say)[1]


def perplexity(p, ids, eos_id: int) -> dict:
    """``model.perplexity.perplexity`` of ``ids``; the pages of a memory-mapped
    ``TokenIds`` are handed back as they are read."""
    with progress.job("eval", "tokens", len(ids)) as job:
        return _perplexity.perplexity(p, ids, eos_id, release=getattr(ids, "release", None), step=job.update)


def dynamic_perplexity(p, ids, eos_id: int, how: dict, T: int, scale: dict | None = None) -> dict:
    """``perplexity``'s dict for dynamic evaluation (``inference.dynamic``) with
    the rule ``how`` (``dynamic.settings``), as ``"dynamic": {**how, "bptt": T}``."""
    from elman.inference.dynamic import adapted_stream_losses
    with progress.job("eval --dynamic", "tokens", len(ids)) as job:
        losses = adapted_stream_losses(p, ids, eos_id, how["lr"], T, how.get("direct_lr"), how["decay"], scale,
                                       job.update)
    return {**summary(losses), "dynamic": {**how, "bptt": T}}


def sample(p, prime_ids, eos_id: int, n: int, temperature: float = 1.0, seed: int = 0) -> list:
    """Draw ``n`` word ids after ``<eos>`` and ``prime_ids``.

    Temperature divides the log-probabilities: below 1 sharpens the
    distribution, above 1 flattens it. The same seed gives the same ids.
    """
    rng = np.random.default_rng(seed)
    h = initial_state(p, 1)
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
