from enum import IntEnum


class AccountOpeningStatus(IntEnum):
    VALUE_201 = 201
    VALUE_409 = 409

    def __str__(self) -> str:
        return str(self.value)
