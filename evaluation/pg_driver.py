"""What one debit costs the PostgreSQL store, measured against a fresh database.

    .venv/bin/python -m evaluation.pg_driver [--dsn postgresql://postgres@127.0.0.1:5432/postgres]
        [--operations 6000] [--concurrency 64] [--pool 16] [--accounts 8]

Four ways to the same debit, ``--concurrency`` at a time through a pool of
``--pool`` connections, each on a database of its own (created on the server
``--dsn`` names, dropped afterwards):

- ``group commit``: the store as it is, asyncpg and one ``ledger_execute_group``
  call for the debits queued together, up to 64: one round trip and one
  commit per group;
- ``one call``: the store without group commit, one ``ledger_execute`` call
  (the rules in PL/pgSQL) per debit: one round trip and one commit each;
- ``psycopg call``: the same call through psycopg 3's async connections and
  psycopg-pool, the other driver the store could have used;
- ``statements``: the rules in Python (``server.ledger.decide``), between
  statements sent one by one in a transaction: BEGIN, the id lock, the id's
  entries, the account row FOR UPDATE, the entry, the balance, COMMIT.

It prints debits per second and the client's CPU per debit (this process's
user and system time over the run, divided by the debits).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
import psycopg_pool

from evaluation.scratch_database import scratch_database, server_dsn
from server.ledger import DEBIT, MAX_BALANCE, Entry, Operation, decide
from server.stores.postgres import PostgresStore

OPENING_BALANCE = 10**12


@dataclass(frozen=True)
class Measurement:
    shape: str
    operations: int
    seconds: float
    cpu_seconds: float

    @property
    def per_second(self) -> float:
        return self.operations / self.seconds

    @property
    def cpu_ms_per_operation(self) -> float:
        return 1000 * self.cpu_seconds / self.operations


Debit = Callable[[str, str], Awaitable[object]]


async def measure(shape: str, debit: Debit, users: Sequence[str], operations: int, concurrency: int) -> Measurement:
    queue = iter(range(operations))

    async def worker() -> None:
        for number in queue:
            await debit(f"{shape}-{number}", users[number % len(users)])

    cpu_started, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Measurement(shape, operations, time.perf_counter() - started, time.process_time() - cpu_started)


async def through_the_store(
    dsn: str, users: Sequence[str], args: argparse.Namespace, *, group_commit: bool
) -> Measurement:
    store = await PostgresStore.open(
        dsn, dict.fromkeys(users, OPENING_BALANCE), pool_size=args.pool, group_commit=group_commit
    )
    try:

        async def debit(transaction_id: str, user_id: str) -> object:
            return await store.execute(DEBIT, transaction_id, user_id, 1)

        shape = "group commit" if group_commit else "one call"
        await measure("warm-up", debit, users, args.concurrency * 4, args.concurrency)
        return await measure(shape, debit, users, args.operations, args.concurrency)
    finally:
        await store.close()


async def group_commit(dsn: str, users: Sequence[str], args: argparse.Namespace) -> Measurement:
    return await through_the_store(dsn, users, args, group_commit=True)


async def one_call(dsn: str, users: Sequence[str], args: argparse.Namespace) -> Measurement:
    return await through_the_store(dsn, users, args, group_commit=False)


async def psycopg_call(dsn: str, users: Sequence[str], args: argparse.Namespace) -> Measurement:
    # The same schema and function, made by the store's own migrations.
    await (await PostgresStore.open(dsn, dict.fromkeys(users, OPENING_BALANCE), pool_size=1)).close()
    pool = psycopg_pool.AsyncConnectionPool(dsn, min_size=args.pool, max_size=args.pool, open=False)
    await pool.open(wait=True)
    try:

        async def debit(transaction_id: str, user_id: str) -> object:
            async with pool.connection() as connection:
                cursor = await connection.execute(
                    "SELECT * FROM ledger_execute(%s, %s, %s, %s, %s, %s)",
                    (DEBIT, transaction_id, user_id, 1, True, MAX_BALANCE),
                    prepare=True,
                )
                return await cursor.fetchone()

        await measure("warm-up", debit, users, args.concurrency * 4, args.concurrency)
        return await measure("psycopg call", debit, users, args.operations, args.concurrency)
    finally:
        await pool.close()


async def statements(dsn: str, users: Sequence[str], args: argparse.Namespace) -> Measurement:
    # The same schema, made by the store's own migrations.
    await (await PostgresStore.open(dsn, dict.fromkeys(users, OPENING_BALANCE), pool_size=1)).close()
    pool = await asyncpg.create_pool(dsn, min_size=args.pool, max_size=args.pool)
    try:

        async def debit(transaction_id: str, user_id: str) -> object:
            async with pool.acquire() as connection, connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock(1, hashtext($1))", transaction_id)
                rows = await connection.fetch(
                    "SELECT sequence, operation, user_id, amount, outcome, balance, rejection "
                    "FROM entries WHERE transaction_id = $1",
                    transaction_id,
                )
                recorded: dict[Operation, Entry] = {
                    row["operation"]: Entry(
                        transaction_id,
                        row["operation"],
                        row["user_id"],
                        row["amount"],
                        row["sequence"],
                        outcome=row["outcome"],
                        balance=row["balance"],
                        rejection=row["rejection"],
                    )
                    for row in rows
                }
                if DEBIT in recorded:
                    return recorded[DEBIT]
                balance = await connection.fetchval(
                    "SELECT balance FROM accounts WHERE user_id = $1 FOR UPDATE", user_id
                )
                entry = decide(DEBIT, transaction_id, user_id, 1, balance=balance, recorded=recorded, sequence=0)
                await connection.execute(
                    "INSERT INTO entries (transaction_id, operation, user_id, amount, outcome, balance, rejection) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    transaction_id,
                    entry.operation,
                    user_id,
                    entry.amount,
                    entry.outcome,
                    entry.balance,
                    entry.rejection,
                )
                if entry.took_effect:
                    await connection.execute(
                        "UPDATE accounts SET balance = $2 WHERE user_id = $1", user_id, entry.balance
                    )
                return entry

        await measure("warm-up", debit, users, args.concurrency * 4, args.concurrency)
        return await measure("statements", debit, users, args.operations, args.concurrency)
    finally:
        await pool.close()


async def run(args: argparse.Namespace) -> list[Measurement]:
    users = [f"user-{number}" for number in range(args.accounts)]
    results = []
    for shape in (group_commit, one_call, psycopg_call, statements):
        async with scratch_database("pg_driver", args.dsn) as dsn:
            results.append(await shape(dsn, users, args))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.pg_driver", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--dsn", default=server_dsn(), help="the server (PG_DSN)")
    parser.add_argument("--operations", type=int, default=6000, help="debits per shape (6000)")
    parser.add_argument("--concurrency", type=int, default=64, help="debits in flight (64)")
    parser.add_argument("--pool", type=int, default=16, help="connections in the pool (16)")
    parser.add_argument("--accounts", type=int, default=8, help="accounts the debits spread over (8)")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    print(
        f"{args.operations} debits per shape, {args.concurrency} in flight, pool of {args.pool}, "
        f"{args.accounts} accounts"
    )
    print(f"{'shape':<12} {'debits/s':>10} {'client CPU ms/debit':>20}")
    for result in results:
        print(f"{result.shape:<12} {result.per_second:>10,.0f} {result.cpu_ms_per_operation:>20.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
