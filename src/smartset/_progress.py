"""Progress bars for long work, on stderr so that ``--json`` output on stdout stays clean."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(total: int, description: str, *, enabled: bool | None = None
                 ) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n, text=None)``; draws a bar when ``enabled`` (default: stderr is a
    terminal). ``text`` replaces the description (e.g. the running loss)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled or total <= 0:
        yield lambda n, text=None: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n, text=None: progress.update(task, advance=n, description=text or description)
