from enum import StrEnum


class ActionKind(StrEnum):
    CANCEL = "cancel"
    RESOLVE = "resolve"
    RETRY = "retry"

    def __str__(self) -> str:
        return str(self.value)
