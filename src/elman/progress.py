"""Progress of long jobs: a bar on a terminal, and how far a stopped job got.

A bar (tqdm) is drawn on stderr only when stderr is a terminal and the
command was not given ``--quiet``; a pipe or a file gets nothing, and
standard output (the results) never gets a byte of it, so a command's
output is the same with or without a bar. Whether a bar is drawn or not,
every job counts what it has done, so that Ctrl-C can end the command with
one line saying how far it got (``interrupted``).

    with progress.job("eval", "tokens", total=len(ids)) as job:
        for window in windows:
            ...
            job.update(len(window))

    for line in progress.track(lines, "score", "tokens", total=n, count=lambda line: len(line.ids)):
        ...

The command line calls ``configure(quiet=...)`` once per command; a
process that must never draw (an MPI rank other than 0) calls
``configure(quiet=True)``, and one whose stderr reaches a terminal through
a pipe (rank 0 under mpiexec) may call ``configure(terminal=True)``.
Units: tokens, hypotheses, utterances, lines, windows, steps, or bytes
(shown in kB, MB, GB).
"""
from __future__ import annotations

import sys
import time

BYTES = "bytes"
POSTFIX_EVERY_S = 0.5       # the counts after the bar are redrawn at most this often
_settings = {"quiet": False, "terminal": None}
_jobs: list["Job"] = []     # begun and not finished, innermost last


def configure(quiet: bool | None = None, terminal: bool | None = None) -> None:
    """``quiet``: no bars at all (``--quiet``). ``terminal``: whether stderr
    counts as a terminal (None: ask it). Unchanged where None; a new command
    (``reset``) starts from neither."""
    if quiet is not None:
        _settings["quiet"] = quiet
    if terminal is not None:
        _settings["terminal"] = terminal


def reset() -> None:
    """Forget the settings and every job (the start of a command)."""
    _settings.update(quiet=False, terminal=None)
    _jobs.clear()


def shown(quiet: bool = False) -> bool:
    """Whether a bar would be drawn (``quiet``: not for this job, whatever the setting)."""
    if _settings["quiet"] or quiet:
        return False
    if _settings["terminal"] is not None:
        return _settings["terminal"]
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):        # no stderr, or a closed one
        return False


def _short(x: float) -> str:
    """12.3k, 4.56M: a rate after the bar, as tqdm writes its own."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


# tqdm's own, but a slow rate as "0.50 steps/s", not "2.00s/ steps"
_FORMAT = {False: "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]",
           True: "{desc}: {n_fmt}{unit} [{elapsed}, {rate_noinv_fmt}{postfix}]"}


def _scale(x: float) -> tuple[float, str]:
    """The divisor and name of bytes for amounts up to ``x``."""
    return next(((d, name) for d, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")) if x >= d), (1, "bytes"))


class Job:
    """One long job: ``unit``s done of ``total`` (None: not known), its bar if
    one is shown. ``note``: what Ctrl-C leaves behind, said after how far it
    got. ``count(**more)``: other counts shown after the bar (lines, ...),
    with ``rates`` each one's rate too (tokens/s of a job counted in bytes)."""

    def __init__(self, desc: str, unit: str, total: float | None = None, initial: float = 0,
                 quiet: bool = False, note: str = "nothing written", rates: bool = False):
        self.desc, self.unit, self.total, self.note, self.rates = desc, unit, total, note, rates
        self.started = time.monotonic()
        self.done, self.more, self.finished = initial, {}, False
        self._bar, self._postfix_at = None, 0.0
        if shown(quiet):
            from tqdm import tqdm
            tqdm.monitor_interval = 0       # no monitor thread: the tokeniser forks its workers under a bar
            scale = {"unit": "B", "unit_divisor": 1000} if unit == BYTES else {"unit": f" {unit}"}
            big = total is None or total >= 10_000      # 12.3k, 4.5M; small counts as they are
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit_scale=big, file=sys.stderr,
                             leave=False, dynamic_ncols=True, bar_format=_FORMAT[total is None], **scale)
        _jobs.append(self)

    @property
    def bar(self):
        """The tqdm bar, or None where none is shown."""
        return self._bar

    def update(self, n: float = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)

    def count(self, **more: int) -> None:
        """Add to the other counts (``count(lines=1)``)."""
        for k, v in more.items():
            self.more[k] = self.more.get(k, 0) + v
        if self._bar is not None and time.monotonic() - self._postfix_at > POSTFIX_EVERY_S:
            self._postfix_at = time.monotonic()
            self._bar.set_postfix_str(", ".join(self._counts()), refresh=False)

    def _counts(self):
        for k, v in self.more.items():
            rate = v / max(time.monotonic() - self.started, 1e-9)
            yield f"{v:,} {k}" + (f" ({_short(rate)} {k}/s)" if self.rates else "")

    def set_postfix(self, **values) -> None:
        """Values shown after the bar (``ppl=...``), redrawn with its next update."""
        if self._bar is not None:
            self._bar.set_postfix(**values, refresh=False)

    def guard(self, stream):
        """``stream`` itself; or, while the bar is drawn on the same terminal,
        a writer that lifts the bar for each write (so results on a terminal
        never run into it). Either way the same bytes reach ``stream``."""
        if self._bar is None or not getattr(stream, "isatty", lambda: False)():
            return stream
        return _Guarded(stream)

    def how_far(self) -> str:
        """``"after 12,345 of 44,500 tokens (28%), 1,203 lines"``."""
        div, unit, form = 1, self.unit, "{:,.0f}"
        if self.unit == BYTES:
            (div, unit), form = _scale(max(self.done, self.total or 0)), "{:,.1f}"
        text = "after " + form.format(self.done / div)
        if self.total:
            text += f" of {form.format(self.total / div)} {unit} ({100 * self.done / self.total:.0f}%)"
        else:
            text += f" {unit}"
        return text + "".join(f", {v:,} {k}" for k, v in self.more.items())

    def finish(self) -> None:
        """The job is done: its bar goes, and Ctrl-C no longer speaks of it."""
        self._close()
        self.finished = True
        if self in _jobs:
            _jobs.remove(self)

    def stop(self) -> None:
        """The job was stopped part way: its bar goes, what it did is kept for ``interrupted``."""
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Job":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self.finish() if kind is None else self.stop()


class _Guarded:
    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        from tqdm import tqdm
        tqdm.write(text, file=self.stream, end="")
        return len(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def job(desc: str, unit: str, total: float | None = None, **kw) -> Job:
    """A :class:`Job` (use it in ``with``: an exception leaves its count for ``interrupted``)."""
    return Job(desc, unit, total, **kw)


def track(items, desc: str, unit: str, total: float | None = None, count=None, **kw):
    """Yield each of ``items``, counting ``count(item)`` units (default 1)
    once the caller is done with it."""
    j = Job(desc, unit, total, **kw)
    try:
        for item in items:
            yield item
            j.update(1 if count is None else count(item))
    except BaseException:       # GeneratorExit too: a loop left early, or unwound by Ctrl-C
        j.stop()
        raise
    j.finish()


def write(message: str) -> None:
    """One line on stderr that does not break a bar being drawn."""
    if any(j.bar is not None for j in _jobs):
        from tqdm import tqdm
        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)


def interrupted() -> str:
    """The line Ctrl-C ends a command with: how far its innermost job got,
    and what that job leaves behind."""
    stopped = _jobs[-1] if _jobs else None
    for j in _jobs:
        j.stop()
    _jobs.clear()
    if stopped is None:
        return "elman: interrupted"
    return f"elman: interrupted: {stopped.desc} {stopped.how_far()}; {stopped.note}"
