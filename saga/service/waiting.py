"""Waiting for sagas to end, without a database connection per waiter.

A saga this process drives tells :meth:`EndWatch.ended` as it ends. Sagas
driven by other processes (workers on a shared log) are found by one poller
that reads the state of every awaited saga in one query per interval, however
many requests wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from saga.logs import SagaLog

logger = logging.getLogger("saga")


class EndWatch:
    def __init__(self, log: SagaLog, *, poll_seconds: float = 0.1) -> None:
        self._log = log
        self._poll_seconds = poll_seconds
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._poller: asyncio.Task[None] | None = None

    def ended(self, transaction_id: str) -> None:
        """Wake everyone waiting for ``transaction_id``: its saga is in a final state."""
        for waiter in self._waiters.pop(transaction_id, []):
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, transaction_id: str, seconds: float) -> None:
        """Return once the saga has ended or ``seconds`` have passed, whichever is first."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(transaction_id, []).append(waiter)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="saga-end-watch")
        try:
            await asyncio.wait_for(waiter, seconds)
        except TimeoutError:
            pass
        finally:
            waiting = self._waiters.get(transaction_id)
            if waiting is not None and waiter in waiting:
                waiting.remove(waiter)
                if not waiting:
                    del self._waiters[transaction_id]

    async def _poll(self) -> None:
        while self._waiters:
            await asyncio.sleep(self._poll_seconds)
            awaited = list(self._waiters)
            if not awaited:
                break
            try:
                states = await self._log.states(awaited)
            except Exception as error:
                # The waiters' own deadlines still end their waits.
                logger.warning("reading the state of %d awaited sagas failed: %s", len(awaited), error)
                continue
            for transaction_id, state in states.items():
                if state.is_terminal:
                    self.ended(transaction_id)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
