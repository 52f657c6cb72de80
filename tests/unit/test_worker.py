"""A worker outlives an outage of its saga log: claiming pauses, and resumes once the log answers."""

from __future__ import annotations

import asyncio

from saga.logs import MemorySagaLog, SagaLogError
from saga.orchestrator import Orchestrator
from saga.records import AccountRef, SagaRecord
from saga.worker import Worker


class LogDownForAWhile(MemorySagaLog):
    """A shared log whose first ``failures`` claims fail as a database outage does."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.claims = 0

    async def claim(self, owner: str, **options: object) -> list[SagaRecord]:
        self.claims += 1
        if self.claims <= self.failures:
            raise SagaLogError("the saga log at test failed: connection refused")
        return await super().claim(owner, **options)  # type: ignore[arg-type]


def test_a_worker_keeps_claiming_through_an_outage_of_the_log_and_claims_what_was_submitted_meanwhile() -> None:
    async def scenario() -> tuple[int, int]:
        log = LogDownForAWhile(failures=3)
        record = SagaRecord(
            "t-1", AccountRef("http://127.0.0.1:9", "alice"), AccountRef("http://127.0.0.1:8", "bob"), 5
        )
        await log.submit(record)
        claimed = asyncio.Event()
        async with Orchestrator(log) as orchestrator:

            async def drive(saga: SagaRecord) -> None:
                claimed.set()
                await asyncio.Event().wait()

            orchestrator.drive = drive  # type: ignore[assignment,method-assign]
            worker = Worker(orchestrator, poll_seconds=0.01, grace_seconds=0.1)
            stop = asyncio.Event()
            running = asyncio.create_task(worker.run(stop))
            await asyncio.wait_for(claimed.wait(), 10)
            stop.set()
            await asyncio.wait_for(running, 10)
        return log.claims, worker.stats.claimed

    claims, claimed = asyncio.run(scenario())
    assert claims >= 4
    assert claimed == 1
