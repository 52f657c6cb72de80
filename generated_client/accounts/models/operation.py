from enum import StrEnum


class Operation(StrEnum):
    COMPENSATE_CREDIT = "compensate_credit"
    COMPENSATE_DEBIT = "compensate_debit"
    CREDIT = "credit"
    DEBIT = "debit"

    def __str__(self) -> str:
        return str(self.value)
