"""A worker: drives the sagas of a shared log, alongside any number of other workers.

It claims claimable sagas (new submissions, hand-backs, and the sagas of
workers whose leases ran out) up to its concurrency, drives each one through
its :class:`~saga.Orchestrator`, which renews the leases meanwhile, and
sleeps until the log wakes it (LISTEN/NOTIFY on PostgreSQL) or a poll
interval passes: an expired lease wakes no one, so ``poll_seconds`` bounds
how long it waits before a dead worker's sagas are noticed.

A failure of the log while claiming (an outage of PostgreSQL) pauses the
claiming until the next poll; the worker goes on once the log is back. A
log that cannot be listened to at start leaves the worker polling.

On stop it claims nothing more, gives the sagas it drives ``grace_seconds``
to finish, then stops the rest where they are and hands their leases back,
so that another worker resumes them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from saga.failures import LOG_FAILURES
from saga.orchestrator import Orchestrator
from saga.records import SagaRecord
from saga.run import TransferResult

logger = logging.getLogger("saga")


@dataclass
class WorkerStats:
    claimed: int = 0
    finished: int = 0
    handed_back: int = 0


class Worker:
    def __init__(
        self,
        orchestrator: Orchestrator,
        *,
        concurrency: int = 16,
        poll_seconds: float = 1.0,
        grace_seconds: float = 5.0,
        on_finished: Callable[[TransferResult], None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not poll_seconds > 0:
            raise ValueError("poll_seconds must be above 0")
        self.orchestrator = orchestrator
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.grace_seconds = grace_seconds
        #: Told of every saga this worker drove to an end or a pause.
        self.on_finished = on_finished
        self.stats = WorkerStats()
        self._driving: dict[asyncio.Task[TransferResult], SagaRecord] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Drive sagas until ``stop`` is set; then finish or hand back what is held, and return."""
        wake = asyncio.Event()
        stopping = asyncio.create_task(stop.wait())
        try:
            await self._listen(wake, stopping)
            while not stop.is_set():
                free = self.concurrency - len(self._driving)
                if free > 0:
                    wake.clear()
                    try:
                        claimed = await self.orchestrator.claim(free)
                    except LOG_FAILURES as error:
                        # An outage of the log pauses the claiming, never ends it:
                        # the sagas submitted meanwhile are claimed once it is back.
                        logger.warning("claiming sagas failed, again in %g s: %s", self.poll_seconds, error)
                        await self._sleep(wake, stopping)
                        continue
                    for record in claimed:
                        self._start(record, wake)
                    if len(claimed) == free:
                        # There may be more: claim again once a slot frees.
                        continue
                await self._sleep(wake, stopping)
        finally:
            stopping.cancel()
            await self._hand_back()

    async def _listen(self, wake: asyncio.Event, stopping: asyncio.Task[bool]) -> None:
        """Be woken by submissions; a stop meanwhile ends the wait for the log's connection."""
        listening = asyncio.create_task(self.orchestrator.log.listen(wake.set, retry=self.orchestrator.retry_now))
        await asyncio.wait({listening, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not listening.done():
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
            return
        error = listening.exception()
        if error is None:
            return
        if not isinstance(error, LOG_FAILURES):
            raise error
        # Polling alone still finds every claimable saga, each within a poll interval.
        logger.warning("listening on the saga log failed; polling every %g s instead: %s", self.poll_seconds, error)

    def _start(self, record: SagaRecord, wake: asyncio.Event) -> None:
        self.stats.claimed += 1
        task = asyncio.create_task(self.orchestrator.drive(record), name=f"saga-{record.transaction_id}")
        self._driving[task] = record

        def done(finished: asyncio.Task[TransferResult]) -> None:
            self._driving.pop(finished, None)
            if not finished.cancelled():
                self.stats.finished += 1
                error = finished.exception()
                if error is not None:
                    logger.warning("saga %s stopped: %s", record.transaction_id, error)
                elif self.on_finished is not None:
                    self.on_finished(finished.result())
            wake.set()

        task.add_done_callback(done)

    async def _sleep(self, wake: asyncio.Event, stopping: asyncio.Task[bool]) -> None:
        woken = asyncio.create_task(wake.wait())
        try:
            await asyncio.wait({woken, stopping}, timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()

    async def _hand_back(self) -> None:
        if not self._driving:
            return
        await asyncio.wait(set(self._driving), timeout=self.grace_seconds)
        unfinished = dict(self._driving)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        for record in unfinished.values():
            with contextlib.suppress(Exception):
                if await self.orchestrator.release(record):
                    self.stats.handed_back += 1
