"""The saga logs under their first module name; they live in :mod:`saga.logs` now."""

from saga.logs import (
    IdempotencyKeyConflict,
    LeaseLost,
    MemorySagaLog,
    SagaLog,
    SagaLogError,
    SqliteSagaLog,
    count_sagas,
    open_log,
)

__all__ = [
    "IdempotencyKeyConflict",
    "LeaseLost",
    "MemorySagaLog",
    "SagaLog",
    "SagaLogError",
    "SqliteSagaLog",
    "count_sagas",
    "open_log",
]
