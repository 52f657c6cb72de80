"""Progress on standard error, in the form that suits where it goes.

On a terminal: a live progress bar (rich). Anywhere else (a file, a pipe, CI,
a container's log): one plain line every few seconds and a last one at the
end, never a carriage return, so the output reads line by line.

What a saga waits on (:class:`WaitLines`) is plain lines everywhere.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from saga.records import Attempt
from saga.waits import Backoff, RequestOut

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


#: How long a request goes unanswered before a line says what the saga waits on.
SLOW_ANSWER_SECONDS = 1.0


class WaitLines:
    """What the sagas wait on, a line each on ``err`` as it happens (a :class:`saga.waits.WaitObserver`).

    ``waiting: credit attempt 3 of 8 failed (503 service_unavailable); next try in 1.6 s`` at every backoff;
    ``waiting: credit attempt 1 of 3 sent to URL: no answer after 1.0 s; it times out at 5.0 s`` once a request
    has gone ``slow_after`` seconds unanswered. A run whose services answer at once prints nothing. Lines
    of the command's own saga (``own``) name no saga; any other's start with its id.
    """

    def __init__(self, err: TextIO, *, own: str | None = None, slow_after: float = SLOW_ANSWER_SECONDS) -> None:
        self.err = err
        self.own = own
        self.slow_after = slow_after
        self._unanswered: dict[RequestOut, asyncio.TimerHandle] = {}

    def sending(self, request: RequestOut) -> None:
        timer = asyncio.get_running_loop().call_later(self.slow_after, self._still_waiting, request)
        self._unanswered[request] = timer

    def answered(self, request: RequestOut) -> None:
        timer = self._unanswered.pop(request, None)
        if timer is not None:
            timer.cancel()

    def backing_off(self, backoff: Backoff) -> None:
        failed = backoff.failed
        attempt = numbered(failed.step, failed.number, backoff.attempts)
        self._say(backoff.transaction_id, f"{attempt} failed ({why(failed)}); next try in {duration(backoff.delay)}")

    def close(self) -> None:
        """Say nothing more of the requests still out (the command is ending)."""
        for timer in self._unanswered.values():
            timer.cancel()
        self._unanswered.clear()

    def _still_waiting(self, request: RequestOut) -> None:
        self._unanswered.pop(request, None)
        attempt = numbered(request.step, request.attempt, request.attempts)
        self._say(
            request.transaction_id,
            f"{attempt} sent to {request.url}: no answer after {duration(self.slow_after)}; it times out at "
            f"{duration(request.timeout)}",
        )

    def _say(self, transaction_id: str, line: str) -> None:
        saga = "" if transaction_id == self.own else f"saga {transaction_id}: "
        self.err.write(f"waiting: {saga}{line}\n")
        self.err.flush()


def numbered(step: str, number: int, attempts: int | None) -> str:
    """``credit attempt 3 of 8``; ``attempt 3`` alone where the policy sets no limit."""
    return f"{step} attempt {number}" + ("" if attempts is None else f" of {attempts}")


def why(attempt: Attempt) -> str:
    """What came back instead of a final answer: ``503 service_unavailable``, ``500``, ``timeout``."""
    if attempt.status is None:
        return attempt.error or "no answer"
    return f"{attempt.status} {attempt.code}" if attempt.code else str(attempt.status)


def duration(seconds: float) -> str:
    """``1.6 s``; ``40 ms`` under a second."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"
