"""Progress for long work: one bar per job, on stderr so ``--json`` output on stdout stays clean.

Written by hand rather than by nesting Rich bars: a job (``predict --oof``, an audit) runs
steps that each had their own bar (decoding, embedding, training each fold, measuring), and
a user wants one line that says where the whole job is and when it will end. So:

- :func:`progress_job` opens the job's one bar. Its total is in the job's own units (folds,
  images measured); :meth:`Job.phase` names a part of the job ("fold 2/5", "near copies")
  and reserves ``units`` of the total for it.
- :func:`progress_bar`, as every stage calls it, draws its own bar only outside a job.
  Inside one it draws nothing: it fills the current phase's units in proportion and shows
  its text (``small_cnn epoch 3/10 loss 0.41``) as the phase's detail. A job opened inside
  another job does the same, so a job's steps never stack bars.
- :func:`phase`, :func:`next_phase` and :func:`step` name where a job is from code that
  does not hold the job (a stage function called by the job); without a job they do
  nothing.

The bar itself is a *sink* (``start``, ``update``, ``set_total``, ``note``, ``stop``):
:class:`RichSink` on a terminal; :class:`RecordingSink` keeps every update, for tests and
notebooks. ``enabled`` is what stage functions already take as ``progress`` or
``show_progress``: ``True``, ``False``, None (a bar when stderr is a terminal) or a sink.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import Callable, Iterator

__all__ = ["progress_bar", "progress_job", "phase", "next_phase", "step", "Job", "RichSink",
           "RecordingSink"]

_JOB: contextvars.ContextVar[Job | None] = contextvars.ContextVar("smartset_progress_job",
                                                                   default=None)


class RichSink:
    """A Rich progress bar on stderr: description, bar, done of total (or percent for a
    job), elapsed and remaining time. Notes print above the bar."""

    def __init__(self, *, counts: bool = True):
        self.counts = counts
        self._progress = self._task = None
        self._shown = 0.0

    def start(self, title: str, total: float) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn,
                                   TextColumn, TimeElapsedColumn, TimeRemainingColumn)

        done = MofNCompleteColumn() if self.counts else TaskProgressColumn()
        # markup=False: a class or file name in the description is shown as written
        self._progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                                  done, TimeElapsedColumn(), TimeRemainingColumn(),
                                  console=Console(stderr=True), transient=False,
                                  auto_refresh=False)
        # No refresh thread (auto_refresh=False; redrawn on updates, at most 10 times a
        # second): the local engine forks its workers only while this process runs one
        # thread, and a job's bar is up before its engine starts.
        self._progress.start()
        self._task = self._progress.add_task(title, total=total)

    def update(self, completed: float, description: str) -> None:
        self._progress.update(self._task, completed=completed, description=description)
        now = time.monotonic()
        if now - self._shown >= 0.1:
            self._shown = now
            self._progress.refresh()

    def set_total(self, total: float) -> None:
        self._progress.update(self._task, total=total)

    def note(self, text: str) -> None:
        self._progress.console.print(text, markup=False, emoji=False, highlight=False)

    def stop(self) -> None:
        self._progress.refresh()
        self._progress.stop()


class RecordingSink:
    """Keeps what a bar would show: ``events`` holds ``("start", title, total)``,
    ``("update", completed, description)``, ``("total", total)``, ``("note", text)`` and
    ``("stop",)``."""

    def __init__(self):
        self.events: list[tuple] = []

    def start(self, title: str, total: float) -> None:
        self.events.append(("start", title, total))

    def update(self, completed: float, description: str) -> None:
        self.events.append(("update", completed, description))

    def set_total(self, total: float) -> None:
        self.events.append(("total", total))

    def note(self, text: str) -> None:
        self.events.append(("note", text))

    def stop(self) -> None:
        self.events.append(("stop",))

    @property
    def bars(self) -> int:
        """How many bars were drawn."""
        return sum(1 for e in self.events if e[0] == "start")

    @property
    def descriptions(self) -> list[str]:
        return [e[2] for e in self.events if e[0] == "update"]

    @property
    def notes(self) -> list[str]:
        return [e[1] for e in self.events if e[0] == "note"]


def _sink_for(enabled) -> object | None:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if hasattr(enabled, "update") and hasattr(enabled, "start"):
        return enabled
    return RichSink() if enabled else None


class Job:
    """One bar for a whole job; see the module docstring. ``enabled``: whether it shows."""

    def __init__(self, title: str, total: float, sink, parent: _Child | None = None):
        self.title, self.total, self.sink, self._parent = title, float(total), sink, parent
        self.completed = 0.0
        self._phase = self._step = self._detail = ""
        self._slot_end = 0.0

    @property
    def enabled(self) -> bool:
        return self.sink is not None or (self._parent is not None and self._parent.job.enabled)

    def description(self) -> str:
        return " · ".join(p for p in (self.title, self._phase, self._step, self._detail) if p)

    def _show(self) -> None:
        if self._parent is not None:
            self._parent.report(self.completed / self.total if self.total > 0 else 0.0,
                                self.description())
        elif self.sink is not None:
            self.sink.update(min(self.completed, self.total), self.description())

    def set_total(self, total: float) -> None:
        """The job's size once known (an audit knows how many images it must measure only
        after it has looked at the cache)."""
        self.total = float(total)
        if self._parent is None and self.sink is not None:
            self.sink.set_total(self.total)
        self._show()

    def note(self, text: str) -> None:
        """A line printed above the bar (what will be done, and why)."""
        if self._parent is not None:
            self._parent.job.note(text)
        elif self.sink is not None:
            self.sink.note(text)

    def advance(self, units: float) -> None:
        self.completed += units
        self._show()

    @contextlib.contextmanager
    def phase(self, name: str, units: float = 0.0) -> Iterator[Job]:
        """Name a part of the job and reserve ``units`` of its total; on exit the job stands
        at the end of the phase, however much of it was reported."""
        saved = (self._phase, self._step, self._detail, self._slot_end)
        end = self.completed + units
        self._phase, self._step, self._detail, self._slot_end = name, "", "", end
        self._show()
        try:
            yield self
        finally:
            self.completed = max(self.completed, end)
            self._phase, self._step, self._detail, self._slot_end = saved
            self._show()

    def next_phase(self, name: str, units: float = 0.0) -> None:
        """End the phase begun by the last ``next_phase`` (the job moves to its end) and
        begin ``name`` with ``units``: for a loop whose body is one phase (the folds)."""
        self.completed = max(self.completed, self._slot_end)
        self._phase, self._step, self._detail = name, "", ""
        self._slot_end = self.completed + units
        self._show()

    def step(self, text: str) -> None:
        """Name where the job is within its phase (no units)."""
        self._step, self._detail = text, ""
        self._show()

    def child(self, total: float, description: str) -> _Child:
        """An inner bar's share: the rest of the current phase's units."""
        return _Child(self, total, description)


class _Child:
    """An inner bar (or job) inside a job: fills what is left of the job's phase."""

    def __init__(self, job: Job, total: float, description: str):
        self.job, self.total, self.description = job, total, description
        self.start = job.completed
        self.span = max(job._slot_end - job.completed, 0.0)
        self.done = 0.0

    def advance(self, n: float, text: str | None = None) -> None:
        self.done += n
        count = f"{self.description} {self.done:g}/{self.total:g}"
        self.report(min(self.done / self.total, 1.0) if self.total > 0 else 0.0,
                    text or count)

    def report(self, fraction: float, text: str) -> None:
        self.job.completed = max(self.job.completed, self.start + self.span * fraction)
        self.job._detail = text
        self.job._show()

    def close(self) -> None:
        self.job._detail = ""
        self.job._show()


@contextlib.contextmanager
def progress_job(title: str, total: float, *, enabled=None) -> Iterator[Job]:
    """One bar for a job of ``total`` units; yields a :class:`Job`. ``enabled``: True,
    False, None (when stderr is a terminal) or a sink. Inside another job it draws
    nothing and reports into that job's current phase."""
    outer = _JOB.get()
    if outer is not None:
        child = outer.child(1.0, title)
        job = Job(title, total, None, parent=child)
    else:
        sink = _sink_for(enabled)
        if isinstance(sink, RichSink):
            sink.counts = False  # a job's units are its own: a percentage, not "2.3/5"
        child, job = None, Job(title, total, sink)
        if job.sink is not None:
            job.sink.start(title, job.total)
    token = _JOB.set(job)
    try:
        yield job
        job._phase = job._step = job._detail = ""
        job.completed = max(job.completed, job.total)  # done: the bar ends full
        job._show()
    finally:
        _JOB.reset(token)
        if child is not None:
            child.close()
        elif job.sink is not None:
            job.sink.stop()


@contextlib.contextmanager
def progress_bar(total: int, description: str, *, enabled=None
                 ) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n, text=None)``; ``text`` replaces the description (e.g. the running
    loss). Outside a job: a bar of its own when ``enabled`` (True, None: stderr is a
    terminal, or a sink). Inside a job (:func:`progress_job`): no bar of its own; it fills
    the job's current phase and shows its text there."""
    job = _JOB.get()
    if job is not None:
        child = job.child(total, description)
        try:
            yield child.advance
        finally:
            child.close()
        return
    sink = _sink_for(enabled)
    if sink is None or total <= 0:
        yield lambda n, text=None: None
        return
    done = 0
    sink.start(description, total)

    def advance(n: int, text: str | None = None) -> None:
        nonlocal done
        done += n
        sink.update(done, text or description)

    try:
        yield advance
    finally:
        sink.stop()


@contextlib.contextmanager
def phase(name: str, units: float = 0.0) -> Iterator[Job | None]:
    """:meth:`Job.phase` of the job in progress; nothing without one."""
    job = _JOB.get()
    if job is None:
        yield None
        return
    with job.phase(name, units) as current:
        yield current


def next_phase(name: str, units: float = 0.0) -> None:
    """:meth:`Job.next_phase` of the job in progress; nothing without one."""
    job = _JOB.get()
    if job is not None:
        job.next_phase(name, units)


def step(text: str) -> None:
    """:meth:`Job.step` of the job in progress; nothing without one."""
    job = _JOB.get()
    if job is not None:
        job.step(text)
