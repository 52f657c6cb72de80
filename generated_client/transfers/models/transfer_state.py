from enum import StrEnum


class TransferState(StrEnum):
    CANCELLED = "CANCELLED"
    COMPENSATED = "COMPENSATED"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    CREDITING = "CREDITING"
    DEBITING = "DEBITING"
    FAILED = "FAILED"
    NEEDS_ATTENTION = "NEEDS_ATTENTION"
    PENDING = "PENDING"
    RESOLVED = "RESOLVED"

    def __str__(self) -> str:
        return str(self.value)
