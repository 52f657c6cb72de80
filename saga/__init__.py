"""Transfer sagas: move money between accounts services, durably, through the generated client.

import asyncio

async def main() -> None:
    log = await SqliteSagaLog.open("saga.db")
    try:
        async with Orchestrator(log) as orchestrator:
            result = await orchestrator.transfer(
                AccountRef("http://127.0.0.1:8000", "alice"), AccountRef("http://127.0.0.1:8001", "bob"), 2_500
            )
    finally:
        await log.close()
    print(result.state)

asyncio.run(main())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from saga.clients import ServiceClients, fast_transport
from saga.logs import MemorySagaLog, SagaLog, SagaLogError, SqliteSagaLog
from saga.orchestrator import InvalidTransfer, Orchestrator
from saga.records import AccountRef, Attempt, SagaRecord
from saga.retry import RetryPolicies, RetryPolicy
from saga.run import TransferResult
from saga.states import SagaState

if TYPE_CHECKING:
    from saga.drive.sync import transfer_sync

__all__ = [
    "AccountRef",
    "Attempt",
    "InvalidTransfer",
    "MemorySagaLog",
    "Orchestrator",
    "RetryPolicies",
    "RetryPolicy",
    "SagaLog",
    "SagaLogError",
    "SagaRecord",
    "SagaState",
    "ServiceClients",
    "SqliteSagaLog",
    "TransferResult",
    "fast_transport",
    "transfer_sync",
]


def __getattr__(name: str) -> Any:
    # transfer_sync lives with the other ways of driving the core (saga.drive),
    # which the core itself never imports; it is loaded on first use.
    if name == "transfer_sync":
        from saga.drive.sync import transfer_sync

        return transfer_sync
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
