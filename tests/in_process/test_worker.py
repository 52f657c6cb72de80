"""A worker outlives an outage of its saga log: claiming pauses, and resumes once the log answers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

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
    log = LogDownForAWhile(failures=3)
    assert claimed_by_a_worker_on(log) == 1
    assert log.claims >= 4


class LogThatCannotListen(MemorySagaLog):
    """A shared log whose LISTEN connection fails, or never comes, while its statements work."""

    def __init__(self, *, hangs: bool = False) -> None:
        super().__init__()
        self.hangs = hangs

    async def listen(self, wake: Callable[[], None], retry: Callable[[str], None] | None = None) -> None:
        if self.hangs:
            await asyncio.Event().wait()
        raise SagaLogError("cannot listen on the saga log at test: connection refused")


def claimed_by_a_worker_on(log: MemorySagaLog) -> int:
    async def scenario() -> int:
        await log.submit(
            SagaRecord("t-1", AccountRef("http://127.0.0.1:9", "alice"), AccountRef("http://127.0.0.1:8", "bob"), 5)
        )
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
        return worker.stats.claimed

    return asyncio.run(scenario())


def test_a_worker_whose_log_cannot_be_listened_to_polls_instead_and_still_claims() -> None:
    assert claimed_by_a_worker_on(LogThatCannotListen()) == 1


def test_a_stop_while_a_worker_waits_for_its_listen_connection_ends_it_at_once() -> None:
    async def scenario() -> float:
        async with Orchestrator(LogThatCannotListen(hangs=True)) as orchestrator:
            stop = asyncio.Event()
            running = asyncio.create_task(Worker(orchestrator, poll_seconds=0.01).run(stop))
            await asyncio.sleep(0.05)
            stopped_at = asyncio.get_running_loop().time()
            stop.set()
            await asyncio.wait_for(running, 10)
            return asyncio.get_running_loop().time() - stopped_at

    assert asyncio.run(scenario()) < 1.0
