from enum import IntEnum


class TrailEntryStatus(IntEnum):
    VALUE_200 = 200
    VALUE_404 = 404
    VALUE_409 = 409

    def __str__(self) -> str:
        return str(self.value)
