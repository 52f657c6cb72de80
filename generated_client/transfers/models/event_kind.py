from enum import StrEnum


class EventKind(StrEnum):
    ACTION = "action"
    ATTEMPT = "attempt"
    CLAIM = "claim"
    STATE = "state"

    def __str__(self) -> str:
        return str(self.value)
