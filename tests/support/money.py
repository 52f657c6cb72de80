"""Judging a finished run: is the money exactly where the saga log says it should be?"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from saga import SagaLog, ServiceClients, SqliteSagaLog, services, verify
from saga.records import SagaRecord


def ends_of(records: Sequence[SagaRecord]) -> list[verify.SagaEnd]:
    return [verify.SagaEnd.of(r) for r in records]


async def violations_after(
    log: SagaLog,
    before: dict[str, dict[str, int]],
    *,
    token: str | None = None,
) -> list[verify.Violation]:
    """Every broken invariant, judged from the saga log and the services' balances and audit trails."""
    records = await log.sagas()
    async with ServiceClients(token=token) as reader:
        after = await services.snapshot(reader, before)
        trails = await services.trails(reader, ends_of(records))
    return verify.check(before, after, ends_of(records), trails)


def violations_in(db: Path, before: dict[str, dict[str, int]]) -> list[verify.Violation]:
    """:func:`violations_after` for the SQLite saga log in ``db``, written by another process that has ended."""

    async def judge() -> list[verify.Violation]:
        log = await SqliteSagaLog.open(db, create=False)
        try:
            return await violations_after(log, before)
        finally:
            await log.close()

    return asyncio.run(judge())
