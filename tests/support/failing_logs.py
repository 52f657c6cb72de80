"""Memory saga logs whose one write fails, as a full disk would: what a run does with changes it could not commit."""

from __future__ import annotations

from collections.abc import Sequence

from saga.logs import MemorySagaLog, SagaLogError
from saga.records import Change

DISK_FULL = "saga log commit failed: disk full"


class FailingCommitOnce(MemorySagaLog):
    """A memory log shared by runs (not exclusive) whose commit of one change number ``fail_at`` (from 1) fails."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.calls = 0

    async def commit(self, change: Change) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise SagaLogError(DISK_FULL)
        await super().commit(change)


class FailingWriteOnce(MemorySagaLog):
    """An exclusive memory log whose ``commit_all`` number ``fail_at`` (from 1) fails whole: none of it lands."""

    def __init__(self, fail_at: int) -> None:
        super().__init__(exclusive=True)
        self.fail_at = fail_at
        self.calls = 0

    async def commit_all(self, changes: Sequence[Change]) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise SagaLogError(DISK_FULL)
        await super().commit_all(changes)
