"""Submit a transfer to a saga log for the workers to drive, and wait for its end.

    log = await open_log("postgresql://…")  # any SagaLog
    transaction_id = await submit(log, AccountRef(a, "alice"), AccountRef(b, "bob"), 2_500, idempotency_key="k1")
    record = await wait(log, transaction_id)

The saga is PENDING in the log before ``submit`` returns; submitting again
with the same idempotency key records nothing and returns the first id.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Final

from saga.logs import SagaLog
from saga.orchestrator import validate
from saga.records import AccountRef, SagaRecord

#: The transfers contract's IdempotencyKey: HTTP drops spaces at either end of
#: a header value, so a key neither starts nor ends with one.
IDEMPOTENCY_KEY_MAX_LENGTH: Final = 255
IDEMPOTENCY_KEY_PATTERN: Final = r"^[!-~]([ -~]{0,253}[!-~])?$"
IDEMPOTENCY_KEY: Final = re.compile(IDEMPOTENCY_KEY_PATTERN)
IDEMPOTENCY_KEY_RULE: Final = "1-255 printable ASCII characters, neither starting nor ending with a space"


async def submit(
    log: SagaLog,
    source: AccountRef,
    target: AccountRef,
    amount: int,
    *,
    idempotency_key: str | None = None,
    transaction_id: str | None = None,
    deadline_ms: int | None = None,
) -> str:
    """Record a PENDING transfer for the workers; returns its transaction_id. Raises InvalidTransfer on bad input."""
    validate(source, target, amount)
    now = time.time_ns() // 1_000_000
    record = SagaRecord(
        transaction_id or str(uuid.uuid4()),
        source,
        target,
        amount,
        created_at_ms=now,
        updated_at_ms=now,
        idempotency_key=idempotency_key,
        deadline_ms=deadline_ms,
    )
    submitted, _ = await log.submit(record)
    return submitted.transaction_id


async def wait(log: SagaLog, transaction_id: str, *, interval: float = 0.05) -> SagaRecord:
    """Read the saga until it is terminal; returns its record. Bound it with ``asyncio.timeout``."""
    pause = interval
    while True:
        record = await log.get(transaction_id)
        if record is None:
            raise KeyError(f"no saga {transaction_id} in the log")
        if record.state.is_terminal:
            return record
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)
