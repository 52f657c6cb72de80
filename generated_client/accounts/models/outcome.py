from enum import StrEnum


class Outcome(StrEnum):
    APPLIED = "applied"
    REVERSED = "reversed"
    VOIDED = "voided"

    def __str__(self) -> str:
        return str(self.value)
