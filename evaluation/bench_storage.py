"""``make bench``, storage part: what each ledger store costs, measured side by side in one run.

    python -m evaluation.bench_storage [--quick] [--out DIR] [--seconds N]

(a) the accounts service's own /debit capacity under wrk (64 connections, a
    unique transaction_id per request) on the memory store, on SQLite, on one
    PostgreSQL replica and on two PostgreSQL replicas over one database;
(b) the saga's completed transfers/s (concurrency 64, 30% credit faults,
    SQLite saga log) against a service on each store;
(c) bytes on disk per recorded operation, for SQLite and for PostgreSQL.

Needs wrk (Debian package ``wrk``) and a PostgreSQL server (``PG_DSN``, else
the local one). Numbers go to DIR/bench-storage.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg

from evaluation.bench import ROOT, machine, saga_run
from evaluation.scratch_database import scratch_database_blocking
from server.process import ServerProcess

WRK_SCRIPT = ROOT / "evaluation" / "wrk" / "debit.lua"
WRK_ACCOUNTS = 1_000
ACCOUNTS = {f"u{i}": 10**12 for i in range(WRK_ACCOUNTS)} | {f"user{i}": 10**12 for i in range(64)}
TARGETS = {
    "sqlite_vs_memory_debit": 0.6,
    "postgresql_vs_memory_debit": 0.6,
    "saga_over_postgresql_vs_memory": 0.7,
}


class WrkMissing(RuntimeError):
    pass


@dataclass
class WrkResult:
    store: str
    replicas: int
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def run_wrk(urls: list[str], seconds: int, connections: int = 64) -> tuple[int, float, int, int]:
    """wrk against every URL at once, the connections split between them: (requests, seconds, non-2xx, errors)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise WrkMissing("wrk is not installed: apt-get install wrk (the Debian package)")
    prefix = uuid.uuid4().hex[:10]
    processes = [
        subprocess.Popen(
            [
                wrk,
                "-t1",
                f"-c{connections // len(urls)}",
                f"-d{seconds}s",
                "-s",
                str(WRK_SCRIPT),
                url,
                "--",
                f"{prefix}-{number}",
                str(WRK_ACCOUNTS),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for number, url in enumerate(urls)
    ]
    requests, duration, non_2xx, errors = 0, 0.0, 0, 0
    for process in processes:
        output, _ = process.communicate(timeout=seconds + 60)
        summary = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", output)
        if summary is None:
            raise RuntimeError(f"wrk printed no summary:\n{output}")
        requests += int(summary.group(1))
        unit = {"ms": 0.001, "s": 1.0, "m": 60.0}[summary.group(3)]
        duration = max(duration, float(summary.group(2)) * unit)
        non_2xx += sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
        socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
        errors += sum(int(n) for n in socket.groups()) if socket else 0
    return requests, duration, non_2xx, errors


async def postgres_bytes_per_entry(dsn: str) -> tuple[int, float]:
    connection = await asyncpg.connect(dsn)
    try:
        entries = await connection.fetchval("SELECT count(*) FROM entries")
        size = await connection.fetchval("SELECT pg_total_relation_size('entries')")
    finally:
        await connection.close()
    return entries, size / max(entries, 1)


def sqlite_bytes_per_entry(path: Path, empty_size: int) -> tuple[int, float]:
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (entries,) = connection.execute("SELECT count(*) FROM entries").fetchone()
    connection.close()
    return entries, (path.stat().st_size - empty_size) / max(entries, 1)


def servers(stack: ExitStack, database: str, replicas: int, fault_rate: float) -> list[ServerProcess]:
    return [
        stack.enter_context(
            ServerProcess(
                ACCOUNTS, credit_fault_rate=fault_rate, fault_seed=number, extra_args=["--database", database]
            )
        )
        for number in range(replicas)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs, for a smoke test")
    parser.add_argument(
        "--seconds", type=int, default=None, help="seconds of each wrk run (default 10; 3 with --quick)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "evaluation" / "bench-results")
    args = parser.parse_args(argv)
    seconds = args.seconds or (3 if args.quick else 10)
    transfers = 600 if args.quick else 3_000
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")

    capacity: list[WrkResult] = []
    completed: dict[str, float] = {}
    disk: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as scratch:
        scratch_dir = Path(scratch)
        setups: list[tuple[str, int]] = [("memory", 1), ("sqlite", 1), ("postgresql", 1), ("postgresql", 2)]
        for store, replicas in setups:
            with ExitStack() as stack:
                if store == "memory":
                    database = "memory"
                elif store == "sqlite":
                    sqlite_path = scratch_dir / f"ledger-{uuid.uuid4().hex[:6]}.db"
                    database = f"sqlite:///{sqlite_path}"
                else:
                    database = stack.enter_context(scratch_database_blocking("bench_storage"))
                started = servers(stack, database, replicas, fault_rate=0.0)
                if store == "sqlite":
                    empty_size = sqlite_path.stat().st_size
                try:
                    requests, duration, non_2xx, errors = run_wrk([server.url for server in started], seconds)
                except WrkMissing as missing:
                    print(f"skipped the wrk runs: {missing}")
                    break
                result = WrkResult(store, replicas, requests, duration, non_2xx, errors)
                capacity.append(result)
                print(
                    f"wrk /debit  {store:10} replicas={replicas}  {result.rate:8.0f} req/s  "
                    f"(non-2xx {non_2xx}, socket errors {errors})"
                )
                if store == "sqlite":
                    for server in started:
                        server.stop()
                    entries, per_entry = sqlite_bytes_per_entry(sqlite_path, empty_size)
                    disk["sqlite"] = {"entries": entries, "bytes_per_entry": per_entry}
                    print(f"disk       sqlite      {per_entry:8.0f} bytes per recorded operation ({entries} entries)")
                if store == "postgresql" and replicas == 1:
                    entries, per_entry = asyncio.run(postgres_bytes_per_entry(database))
                    disk["postgresql"] = {"entries": entries, "bytes_per_entry": per_entry}
                    print(f"disk       postgresql  {per_entry:8.0f} bytes per recorded operation ({entries} entries)")

        for store in ("memory", "sqlite", "postgresql"):
            with ExitStack() as stack:
                if store == "memory":
                    database = "memory"
                elif store == "sqlite":
                    database = f"sqlite:///{scratch_dir / f'saga-ledger-{uuid.uuid4().hex[:6]}.db'}"
                else:
                    database = stack.enter_context(scratch_database_blocking("bench_storage"))
                (server,) = servers(stack, database, 1, fault_rate=0.3)
                outcome = asyncio.run(saga_run(server.url, "sqlite", 64, transfers, scratch_dir))
                completed[store] = outcome.completed_rate
                print(
                    f"saga c=64 over {store:10} {outcome.completed_rate:7.1f} completed/s "
                    f"({outcome.rate:7.1f} transfers/s, p50 {outcome.p50_ms:.1f} ms, p99 {outcome.p99_ms:.1f} ms)"
                )

    def rate(store: str, replicas: int = 1) -> float | None:
        found = [r.rate for r in capacity if (r.store, r.replicas) == (store, replicas)]
        return found[0] if found else None

    memory_rate = rate("memory")
    measured: dict[str, float | None] = {
        "sqlite_vs_memory_debit": (rate("sqlite") or 0) / memory_rate if memory_rate else None,
        "postgresql_vs_memory_debit": (rate("postgresql") or 0) / memory_rate if memory_rate else None,
        "two_postgresql_replicas_vs_memory_debit": (rate("postgresql", 2) or 0) / memory_rate if memory_rate else None,
        "saga_over_postgresql_vs_memory": completed["postgresql"] / completed["memory"],
        "saga_over_sqlite_vs_memory": completed["sqlite"] / completed["memory"],
    }
    for name, value in measured.items():
        if value is None:
            print(f"{name:42} not measured")
            continue
        verdict = ""
        if name in TARGETS:
            verdict = f"  target {TARGETS[name]}: {'met' if value >= TARGETS[name] else 'MISSED'}"
        print(f"{name:42} {value:8.3f}{verdict}")
    report = {
        "machine": machine(),
        "quick": args.quick,
        "wrk_seconds": seconds,
        "capacity": [asdict(r) | {"rate": r.rate} for r in capacity],
        "saga_completed_per_second": completed,
        "disk": disk,
        "ratios": measured,
        "targets": {
            name: {
                "target": target,
                "measured": measured[name],
                "met": measured[name] is not None and measured[name] >= target,  # type: ignore[operator]
            }
            for name, target in TARGETS.items()
        },
    }
    (args.out / "bench-storage.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"wrote {args.out / 'bench-storage.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
