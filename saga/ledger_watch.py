"""What one orchestrator process knows of every service's ledger: marks raised as answers come, and quarantines.

The rules are in :mod:`saga.ledgers`; this is the machinery around them. The
marks and the quarantines are read from the log at first use and again at
most once a second, so that a quarantine recorded by another process, or an
operator's decision, reaches this one within a second. Marks are written
back as they rise: at once for a service's first mark (or the first after a
decision), else at most once a second, and on :meth:`LedgerWatch.flush`. A
mark that never reached the log costs detection only a second of positions
at most; ``python -m saga reconcile`` still compares every trail.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from saga.ledgers import LedgerMark, LedgerWentBack, Quarantine, ServiceQuarantined, went_back
from saga.logs import SagaLog, SagaLogError

logger = logging.getLogger("saga")

#: Seconds between reads of the log's marks and quarantines, and between writes of risen marks.
REFRESH_SECONDS = 1.0


class LedgerWatch:
    def __init__(self, log: SagaLog, now_ms: Callable[[], int], clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._now_ms = now_ms
        self._clock = clock
        self._marks: dict[str, LedgerMark] = {}
        self._quarantined: dict[str, Quarantine] = {}
        self._unsaved: dict[str, LedgerMark] = {}
        self._read_at: float | None = None
        self._saved_at = clock()
        self._reading = asyncio.Lock()

    async def refuse_quarantined(self, *services: str, transaction_id: str | None = None) -> None:
        """Raise ServiceQuarantined if any of ``services`` is quarantined."""
        await self._refresh()
        for service in services:
            quarantine = self._quarantined.get(service)
            if quarantine is not None:
                raise ServiceQuarantined(quarantine, transaction_id)

    async def mark(self, service: str) -> LedgerMark | None:
        """The service's mark as this process knows it; take it before sending, and judge the answer by it."""
        await self._refresh()
        return self._marks.get(service)

    async def observe(
        self, service: str, ledger_id: str, position: int, before: LedgerMark | None, transaction_id: str | None
    ) -> None:
        """Raise the service's mark with an answer; quarantine it and raise LedgerWentBack if it went back.

        ``before`` is :meth:`mark` as it was when the request was sent;
        ``transaction_id`` the saga it was sent for, if any.
        """
        reason = went_back(before, ledger_id, position)
        if reason is not None:
            # An operator may have accepted the ledger as it is since this
            # process read the mark: the log has the last word.
            await self._refresh(force=True)
            current = self._marks.get(service)
            if current is not None and before is not None and current.generation > before.generation:
                reason = went_back(current, ledger_id, position)
        if reason is not None:
            await self.quarantine(service, reason, transaction_id)
            raise LedgerWentBack(service, reason, transaction_id)
        known = self._marks.get(service)
        if known is None or known.ledger_id is None:
            generation = 0 if known is None else known.generation
            risen = LedgerMark(service, ledger_id, position, generation)
            first = True
        else:
            risen = known.raised_to(ledger_id, position)
            first = False
        if risen != known:
            self._marks[service] = risen
            self._unsaved[service] = risen
        if self._unsaved and (first or self._clock() - self._saved_at >= REFRESH_SECONDS):
            await self.flush()

    async def quarantine(self, service: str, reason: str, transaction_id: str | None) -> None:
        """Record that nothing more may be sent to ``service``, for every process on the log."""
        quarantine = Quarantine(service, reason, self._now_ms(), transaction_id)
        if await self._log.quarantine(quarantine):
            logger.error("quarantined %s: %s", service, reason, extra={"fields": {"service": service}})
        self._quarantined.setdefault(service, quarantine)

    async def flush(self) -> None:
        """Write the marks that rose since the last write; a log that fails keeps them for the next one."""
        unsaved, self._unsaved = self._unsaved, {}
        self._saved_at = self._clock()
        if not unsaved:
            return
        try:
            await self._log.raise_ledger_marks(list(unsaved.values()))
        except SagaLogError as error:
            for service, mark in unsaved.items():
                self._unsaved.setdefault(service, mark)
            logger.warning("ledger marks not saved yet: %s", error)

    async def _refresh(self, *, force: bool = False) -> None:
        if not force and self._read_at is not None and self._clock() - self._read_at < REFRESH_SECONDS:
            return
        async with self._reading:
            if not force and self._read_at is not None and self._clock() - self._read_at < REFRESH_SECONDS:
                return
            logged = await self._log.ledger_marks()
            quarantines = await self._log.quarantines()
            self._read_at = self._clock()
        for service, logged_mark in logged.items():
            mine = self._marks.get(service)
            if mine is not None and mine.ledger_id is not None and _same_ledger(mine, logged_mark):
                self._marks[service] = mine.raised_to(mine.ledger_id, logged_mark.position)
                continue
            if mine is None or logged_mark.generation >= mine.generation:
                self._marks[service] = logged_mark
                if mine is not None and logged_mark.generation > mine.generation:
                    # Risen before an operator's decision: they no longer count.
                    self._unsaved.pop(service, None)
        self._quarantined = {quarantine.service: quarantine for quarantine in quarantines}


def _same_ledger(mine: LedgerMark, logged: LedgerMark) -> bool:
    return (mine.ledger_id, mine.generation) == (logged.ledger_id, logged.generation)
