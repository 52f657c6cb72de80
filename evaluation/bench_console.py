"""What the operator's reads cost on a large saga log, beside the API's page read, measured in one run.

    python -m evaluation.bench_console [--sagas N] [--repeats N]

The console's overview and every scrape of ``/metrics`` read
``log.overview`` and ``log.action_counts``; the search reads
``log.by_account``. Each is timed on a SQLite log and on a PostgreSQL log of
N sagas (a payments mix: most ended, some COMPENSATING, NEEDS_ATTENTION,
past their deadline, a few operator actions), next to ``log.page(limit=50)``,
the API's list, as the yardstick. Prints the median and p90 of each, in
milliseconds, and each median as a multiple of the page read's.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from evaluation.scratch_database import scratch_database
from saga.logs import SagaLog, open_log
from saga.records import AccountRef, ActionKind, Change, OperatorAction, Resolution, SagaRecord
from saga.states import SagaState

NOW_MS = 1_800_000_000_000
BANK_A = "http://bank-a.invalid"
BANK_B = "http://bank-b.invalid"
#: (state, share): what a log that has run for a while holds.
MIX = (
    (SagaState.COMPLETED, 0.80),
    (SagaState.COMPENSATED, 0.10),
    (SagaState.FAILED, 0.07),
    (SagaState.COMPENSATING, 0.015),
    (SagaState.NEEDS_ATTENTION, 0.005),
    (SagaState.PENDING, 0.01),
)


async def fill(log: SagaLog, sagas: int, rng: random.Random) -> None:
    states = [state for state, _ in MIX]
    weights = [share for _, share in MIX]
    for number in range(sagas):
        tid = f"t-{number:08d}"
        created = NOW_MS - rng.randrange(0, 7 * 86_400_000)
        record = SagaRecord(
            tid,
            AccountRef(BANK_A, f"user-{rng.randrange(5_000)}", "bank-a"),
            AccountRef(BANK_B, f"user-{rng.randrange(5_000)}", "bank-b"),
            rng.randrange(1, 100_000),
            created_at_ms=created,
            updated_at_ms=created,
            deadline_ms=created + 60_000 if rng.random() < 0.3 else None,
        )
        await log.submit(record)
        state = rng.choices(states, weights)[0]
        if state is SagaState.PENDING:
            continue
        (held,) = await log.claim("bench", limit=1, lease_ms=1_000, now_ms=created, transaction_id=tid)
        await log.commit(Change(tid, created + 50, state, epoch=held.epoch, owner=held.owner))
        if state is SagaState.NEEDS_ATTENTION and rng.random() < 0.5:
            settled = Resolution.NOTHING_TO_MOVE
            await log.act(OperatorAction(tid, ActionKind.RESOLVE, "olga", "checked", created + 90, settled))


async def timed(read: Callable[[], Awaitable[Any]], repeats: int) -> list[float]:
    await read()
    spent = []
    for _ in range(repeats):
        started = time.perf_counter()
        await read()
        spent.append((time.perf_counter() - started) * 1000)
    return spent


async def measure(log: SagaLog, repeats: int) -> dict[str, list[float]]:
    return {
        "page(limit=50)": await timed(lambda: log.page(limit=50), repeats),
        "overview": await timed(lambda: log.overview(now_ms=NOW_MS, stuck_after_ms=60_000, limit=50), repeats),
        "action_counts": await timed(log.action_counts, repeats),
        "by_account": await timed(lambda: log.by_account("user-42", limit=100), repeats),
    }


def report(where: str, sagas: int, spent: dict[str, list[float]]) -> None:
    yardstick = statistics.median(spent["page(limit=50)"])
    print(f"\n{where}, {sagas} sagas")
    print(f"  {'read':<16} {'p50 ms':>9} {'p90 ms':>9} {'x page':>8}")
    for name, times in spent.items():
        p50 = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1]
        print(f"  {name:<16} {p50:>9.2f} {p90:>9.2f} {p50 / yardstick:>8.1f}")


async def main(sagas: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        log = await open_log(Path(scratch) / "saga.db")
        try:
            await fill(log, sagas, random.Random(7))
            report("SQLite", sagas, await measure(log, repeats))
        finally:
            await log.close()
    async with scratch_database("bench_console") as dsn:
        log = await open_log(dsn)
        try:
            await fill(log, sagas, random.Random(7))
            report("PostgreSQL", sagas, await measure(log, repeats))
        finally:
            await log.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=30)
    arguments = parser.parse_args()
    if arguments.sagas < 1 or arguments.repeats < 10:
        sys.exit("--sagas must be at least 1 and --repeats at least 10")
    asyncio.run(main(arguments.sagas, arguments.repeats))
