"""``elman demo``: the whole toolkit in about three minutes.

Builds the King James Bible corpus (``elman.data.kjv``), trains a small model on
it within a time budget, reports its test perplexity, samples a passage, and
ends with the answer to the seed's question about the transpose in dJ/dU.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from elman import modelfile
from elman.errors import ElmanError

MARKER = ".elman-demo"   # marks a directory the demo may overwrite
# elman train's defaults, the best recipe measured (README, "Recipes measured
# on KJV"); the time budget ramps the rate down to 0 over its last epoch.
SETTINGS = dict(seed=0)
RESERVE = 10.0  # seconds kept for the last validation, the test perplexity and the sample (~5 s measured)


def _print(text: str = "") -> None:
    print(text, flush=True)


def demo(out="runs/demo", minutes: float = 3.0) -> int:
    started = time.monotonic()
    out = Path(out)
    if modelfile.has_model(out) and not (out / MARKER).exists():
        raise ElmanError(f"{out}: holds a model the demo did not make; pass --out to another directory")

    from elman.data import kjv
    from elman.inference.evaluate import detokenize, load, sample
    from elman.training.state import Settings
    from elman.training.train import train

    files = kjv.build_kjv_corpus()
    _print(f"elman demo: the King James Bible, PTB style, 10,000-word vocabulary ({files['train'].parent})")
    s = Settings(train="", valid="", **SETTINGS)
    s.fit_vocabulary(kjv.VOCAB_SIZE)
    output = f"class softmax, {s.classes} classes" if s.classes else f"sampled softmax, S={s.sampled}"
    _print(f"training an Elman RNN (d={s.embed}, Dh={s.hidden}; {output}; dropout "
           f"{s.dropout:g}; direct connections, {s.direct:g}M weights of order {s.direct_order}) for about "
           f"{minutes:g} minutes into {out} ...")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()
    budget = max(minutes * 60 - (time.monotonic() - started) - RESERVE, 1.0)
    options = dict(SETTINGS, train=str(files["train"]), valid=str(files["valid"]), test=str(files["test"]))
    summary = train(out, options, force=True, time_budget=budget)

    p, vocab, cfg = load(out)
    prime = ["in", "the", "beginning"]
    words = sample(p, vocab.encode(prime), vocab.eos_id, 60, temperature=0.8, seed=1)
    _print()
    _print(f"test perplexity {summary['test_ppl']:.1f} (best validation {summary['best_valid_ppl']:.1f} "
           f"after {summary['epochs_done']} epochs; wall time {time.monotonic() - started:.0f} s)")
    _print("a sampled passage (temperature 0.8, primed with 'in the beginning'):")
    _print()
    for line in detokenize(prime + vocab.decode(words)).splitlines():
        _print("    " + line)
    _print()
    _print(f"model in {out}: try  elman generate --model {out} --prime 'and god said'")
    _print()
    try:
        from elman.explain import transpose_answer
    except ImportError as exc:
        print(f"elman demo: the transpose answer is not available in this install ({exc}); "
              "see the README, 'Where does the h-transpose in dJ/dU come from?'", file=sys.stderr)
        return 0
    text = transpose_answer()
    if text:
        _print(text)
    return 0
