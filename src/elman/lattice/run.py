"""``elman rescore``: many lattices, over several processes, each written
whole or not at all.

The work is one lattice at a time (an HTK file, or one utterance of a Kaldi
archive), spread over ``jobs`` processes forked after the models are
loaded (once, in this process). A
lattice that fails (a cycle, a missing node, a word outside the symbol
table...) is reported in one line naming its file and line and left out of
the output; the others are rescored. A lattice whose expansion passes
``--max-arcs`` is written with its old scores and said so in one line.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from elman import progress
from elman.errors import ElmanError
from elman.fast.threads import one_blas_thread
from elman.lattice import kaldi, slf
from elman.lattice.rescore import Settings, rescore

_WORKER = {}


@dataclass
class Job:
    model: str
    settings: Settings
    ngram: str | None = None
    ids: dict | None = None            # Kaldi: word -> id, for writing


def _load(job: Job) -> None:
    from elman import modelfile
    from elman.inference.ngram import NgramModel
    p, vocab, _ = modelfile.load_params(job.model)
    _WORKER.update(job=job, p=p, vocab=vocab, ngram=NgramModel(job.ngram) if job.ngram else None)


def _one(item):
    """(name, words, score, output bytes or text, arcs, kept, error, source) of one lattice."""
    job = _WORKER["job"]
    try:
        lat = slf.read(item) if isinstance(item, (str, Path)) else item
        with one_blas_thread() if _WORKER.get("processes", 1) > 1 else contextlib.nullcontext():
            r = rescore(lat, _WORKER["p"], _WORKER["vocab"], job.settings, _WORKER["ngram"])
        out = slf.write(r.lattice) if r.lattice.meta.get("format") == "slf" else kaldi.write(r.lattice, job.ids)
        return r.name, r.words, r.score, out, r.arcs, r.kept, None, str(lat.where)
    except ElmanError as exc:
        return None, None, None, None, 0, None, str(exc), str(item if isinstance(item, (str, Path)) else "")
    except KeyError as exc:            # a word with no id in the symbol table (only on writing)
        return None, None, None, None, 0, None, f"{getattr(item, 'where', item)}: utterance " \
               f"{getattr(item, 'name', '')}: word {exc.args[0]!r} is not in the symbol table", ""


def slf_inputs(path) -> list:
    """One SLF file, or a list of them (one path a line, relative to the list)."""
    path = Path(path)
    if not path.is_file():
        raise ElmanError(f"{path}: no such file")
    if slf.is_slf(path):
        return [path]
    try:
        lines = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise ElmanError(f"{path}: cannot read it as a list of lattices ({exc})") from None
    if not lines:
        raise ElmanError(f"{path}: neither an HTK lattice nor a list of them (it is empty)")
    return [Path(x) if Path(x).is_absolute() else path.parent / x for x in lines]


def run(job: Job, items: list, jobs: int, on_result) -> dict:
    """Rescore ``items`` (SLF paths or Lattice objects or ElmanErrors from
    the reader) over ``jobs`` processes; ``on_result(result tuple)`` gets
    each, in input order. Returns the counts and the time."""
    stats = {"lattices": len(items), "failed": 0, "kept": 0, "arcs": 0}
    t0 = time.perf_counter()

    def handle(res):
        if res[6] is not None:
            stats["failed"] += 1
            progress.write(f"elman: error: {res[6]}")
        else:
            stats["arcs"] += res[4]
            if res[5]:
                stats["kept"] += 1
                progress.write(f"elman: {res[7]}: utterance {res[0]}: {res[5]}; kept with its old scores")
            on_result(res)
        bar.update(1)
        bar.count(arcs=res[4])

    _load(job)                    # once, here: a bad model is one error, and the workers inherit it
    _WORKER["processes"] = jobs   # several: one BLAS thread each, or they crowd the cores
    stats["load_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    errors = [x for x in items if isinstance(x, ElmanError)]
    work = [x for x in items if not isinstance(x, ElmanError)]
    with progress.job("rescore", "utterances", total=len(items), note="HTK lattices of the utterances done are written; no 1-best list or Kaldi archive") as bar:
        for exc in errors:
            handle((None, None, None, None, 0, None, str(exc), ""))
        if jobs <= 1 or len(work) <= 1:
            for item in work:
                handle(_one(item))
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            ctx = multiprocessing.get_context("fork")     # the workers start with the loaded models
            with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
                for res in pool.map(_one, work, chunksize=max(1, min(16, len(work) // (4 * jobs)))):
                    handle(res)
    stats["seconds"] = time.perf_counter() - t0
    return stats
