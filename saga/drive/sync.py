"""A small synchronous wrapper around the orchestrator."""

from __future__ import annotations

import asyncio
from pathlib import Path

from saga.logs import SqliteSagaLog
from saga.orchestrator import Orchestrator
from saga.records import AccountRef
from saga.retry import RetryPolicies
from saga.run import TransferResult


def transfer_sync(
    source: AccountRef,
    target: AccountRef,
    amount: int,
    *,
    db: str | Path = "saga.db",
    token: str | None = None,
    policies: RetryPolicies | None = None,
) -> TransferResult:
    """Run one transfer to its end, with a durable log at ``db``."""

    async def run() -> TransferResult:
        log = await SqliteSagaLog.open(db)
        try:
            async with Orchestrator(log, token=token, policies=policies, concurrency=1) as orchestrator:
                return await orchestrator.transfer(source, target, amount)
        finally:
            await log.close()

    return asyncio.run(run())
