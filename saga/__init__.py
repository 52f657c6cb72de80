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

from saga.log import MemorySagaLog, SagaLog, SagaLogError, SqliteSagaLog
from saga.orchestrator import InvalidTransfer, Orchestrator, fast_transport
from saga.records import AccountRef, Attempt, SagaRecord
from saga.retry import RetryPolicies, RetryPolicy
from saga.run import TransferResult
from saga.states import SagaState
from saga.sync import transfer_sync

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
    "SqliteSagaLog",
    "TransferResult",
    "fast_transport",
    "transfer_sync",
]
