from enum import StrEnum


class Resolution(StrEnum):
    MOVED_BY_HAND = "moved_by_hand"
    NOTHING_TO_MOVE = "nothing_to_move"

    def __str__(self) -> str:
        return str(self.value)
