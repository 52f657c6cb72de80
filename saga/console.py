"""Progress on standard error, in the form that suits where it goes.

On a terminal: a live progress bar (rich). Anywhere else (a file, a pipe, CI,
a container's log): one plain line every few seconds and a last one at the
end, never a carriage return, so the output reads line by line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

#: Called with (done, total) after each transfer.
ProgressCallback = Callable[[int, int], None]

PLAIN_INTERVAL_SECONDS = 5.0


class PlainProgress:
    """``  120/500 transfers (24%)`` at most every ``interval`` seconds, and once at the end."""

    def __init__(self, err: TextIO, what: str, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.err = err
        self.what = what
        self.interval = interval
        self.clock = clock
        self._last_line_at: float | None = None
        self._last_done = -1

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        due = self._last_line_at is None or now - self._last_line_at >= self.interval
        if done == self._last_done or not (due or done >= total):
            return
        self._last_line_at, self._last_done = now, done
        percent = done * 100 // max(total, 1)
        self.err.write(f"  {done}/{total} {self.what} ({percent}%)\n")
        self.err.flush()


@contextmanager
def progress(
    err: TextIO, *, show: bool, what: str = "transfers", interval: float = PLAIN_INTERVAL_SECONDS
) -> Iterator[ProgressCallback | None]:
    """A progress callback for the block, or None when ``show`` is false.

    The form is chosen by whether ``err`` is a terminal; the bar is closed when
    the block ends, so that later output starts on a line of its own.
    """
    if not show:
        yield None
        return
    if not err.isatty():
        yield PlainProgress(err, what, interval)
        return
    bar = Progress(
        TextColumn("  "),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(what),
        TimeElapsedColumn(),
        console=Console(file=err),
        transient=False,
    )
    task = bar.add_task(what, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update
