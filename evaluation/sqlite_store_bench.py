"""What group commit buys the SQLite ledger store: operations/s with and without it.

    python -m evaluation.sqlite_store_bench [--operations 4000] [--concurrency 64] [--folder DIR]

Each run opens a new store file in DIR (default: a temporary folder, so the
file system under it is the one measured) and keeps ``--concurrency``
operations in flight against the store itself, without HTTP: debits and
credits on fresh transaction ids across 16 accounts. Every commit is synced
to disk (WAL, ``synchronous=FULL``), so without grouping the rate is about one
operation per fsync.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from server.ledger import Operation
from server.stores.sqlite import SqliteStore

ACCOUNTS = {f"user{i}": 10**9 for i in range(16)}


async def measure(folder: Path, *, group_commit: bool, operations: int, concurrency: int) -> tuple[float, int]:
    """Operations/s, and the number of commits they took."""
    path = folder / f"ledger-{'grouped' if group_commit else 'single'}.db"
    store = await SqliteStore.open(path, ACCOUNTS, group_commit=group_commit)
    try:
        remaining = iter(range(operations))
        users = list(ACCOUNTS)

        async def worker() -> None:
            for number in remaining:
                operation: Operation = "debit" if number % 2 else "credit"
                await store.execute(operation, f"op-{number}", users[number % len(users)], 1 + number % 100)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        await store.check_invariants()
        return operations / elapsed, store.commits
    finally:
        await store.close()


async def main_async(operations: int, concurrency: int, folder: Path) -> None:
    print(f"{operations} operations, {concurrency} in flight, files in {folder}")
    rates = {}
    for group_commit in (True, False):
        rate, commits = await measure(folder, group_commit=group_commit, operations=operations, concurrency=concurrency)
        rates[group_commit] = rate
        label = "group commit" if group_commit else "one commit per operation"
        print(f"  {label:26} {rate:8.0f} operations/s  ({commits} commits)")
    print(f"  group commit is {rates[True] / rates[False]:.1f}x faster")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--operations", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--folder", type=Path, default=None, help="where the store files go (default: a temp folder)")
    args = parser.parse_args(argv)
    if args.folder is not None:
        asyncio.run(main_async(args.operations, args.concurrency, args.folder))
        return 0
    with tempfile.TemporaryDirectory(prefix="sqlite-store-bench-") as folder:
        asyncio.run(main_async(args.operations, args.concurrency, Path(folder)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
