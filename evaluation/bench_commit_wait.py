"""What a commit costs a transfer at concurrency 1 beyond its own time: how the wait is spent matters.

    python -m evaluation.bench_commit_wait [--rounds N] [--transfers N] [--wait-ms MS]

The saga runs one transfer at a time against ``python -m server`` (memory
store, faults off), on the in-memory log, whose every commit is made to take
``--wait-ms`` in one of three ways, and on the real SQLite log:

* ``none``: the memory log as it is;
* ``loop sleep``: ``asyncio.sleep`` on the event loop;
* ``thread sleep``: ``time.sleep`` on a worker thread, as the SQLite log's
  writer thread waits for its fsync;
* ``spin``: a busy loop on the event loop, which keeps the core awake.

For each it prints the latency budget of one transfer (evaluation.bench): log
commits, client stack, server, everything else. The parts that are not the
log's show what the waits do to the requests around them.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from evaluation.bench import SagaResult, latency_budget, quantile, saga_run, transfer_pairs
from saga import AccountRef, MemorySagaLog, Orchestrator, TransferResult
from saga.records import Change, SagaRecord
from saga.states import SagaState
from server.process import ServerProcess

Wait = Callable[[float], Awaitable[None]]


async def loop_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def thread_sleep(seconds: float) -> None:
    await asyncio.get_running_loop().run_in_executor(None, time.sleep, seconds)


async def spin(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


class WaitingLog(MemorySagaLog):
    """The memory log, each write of which first waits ``seconds`` through ``wait``."""

    def __init__(self, wait: Wait, seconds: float) -> None:
        super().__init__(exclusive=True)
        self._wait = wait
        self._seconds = seconds

    async def create(self, saga: SagaRecord, first_state: SagaState) -> None:
        await self._wait(self._seconds)
        await super().create(saga, first_state)

    async def commit_all(self, changes: Sequence[Change]) -> None:
        await self._wait(self._seconds)
        await super().commit_all(changes)


async def waiting_run(url: str, transfers: int, log: MemorySagaLog) -> SagaResult:
    """``transfers`` one at a time on ``log``, each timed from the call to its return."""
    timed: list[tuple[TransferResult, float]] = []
    async with Orchestrator(log, concurrency=1) as orchestrator:
        for source, target in transfer_pairs(transfers):
            began = time.perf_counter()
            result = await orchestrator.transfer(AccountRef(url, source), AccountRef(url, target), 1)
            timed.append((result, time.perf_counter() - began))
    latencies = [seconds for _, seconds in timed]
    seconds = sum(latencies)
    return SagaResult(
        "memory",
        1,
        len(timed),
        sum(1 for result, _ in timed if result.state == "COMPLETED"),
        sum(len(result.attempts) for result, _ in timed),
        seconds,
        quantile(latencies, 0.5) * 1000,
        quantile(latencies, 0.99) * 1000,
        timed=timed,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds, one run of every kind each")
    parser.add_argument("--transfers", type=int, default=300, help="transfers per run")
    parser.add_argument("--wait-ms", type=float, default=0.3, help="how long each commit of the memory log waits")
    args = parser.parse_args(argv)
    seconds = args.wait_ms / 1000
    waits: dict[str, Wait | None] = {"none": None, "loop sleep": loop_sleep, "thread sleep": thread_sleep, "spin": spin}
    runs: dict[str, list[SagaResult]] = {name: [] for name in [*waits, "SQLite log"]}
    accounts = {f"user{i}": 10**12 for i in range(64)}
    with ServerProcess(accounts, credit_fault_rate=0.0) as server, tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.rounds):
            for name, wait in waits.items():
                log = MemorySagaLog(exclusive=True) if wait is None else WaitingLog(wait, seconds)
                runs[name].append(asyncio.run(waiting_run(server.url, args.transfers, log)))
            runs["SQLite log"].append(asyncio.run(saga_run(server.url, "sqlite", 1, args.transfers, Path(scratch))))
    print(f"one transfer at concurrency 1, p50 of each part in ms; memory log commits wait {args.wait_ms} ms:")
    header = None
    for name, results in runs.items():
        pooled = results[0]
        for later in results[1:]:
            pooled.timed += later.timed
        budget = latency_budget(pooled)
        if header is None:
            header = f"  {'commits':14}" + "".join(f"{part[:24]:>26}" for part, _ in budget)
            print(header)
        print(f"  {name:14}" + "".join(f"{milliseconds:26.3f}" for _, milliseconds in budget))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
