"""Saga workers on PostgreSQL against one process on SQLite, measured side by side in one run.

    python -m evaluation.bench_workers [--transfers N] [--out DIR]

(a) completed transfers/s: one ``python -m saga batch`` process on the SQLite
    log, then 1, 2 and 4 ``python -m saga worker`` processes on one
    PostgreSQL log, all against the same two accounts services (memory
    store, 30% credit faults). A worker run's rate is read from the log
    itself: transfers over the time from the first claim to the last end,
    so process start-up is not counted.
(b) the CPU each run took, split between the services, the orchestrator
    processes and the rest of the machine (PostgreSQL's backends above all),
    from /proc, since on a small machine the cores, not the design, bound
    the rate;
(c) p50 and p99 from submit to the first request, with two idle workers:
    from just before ``submit`` to the commit of DEBITING, which is the
    last thing a worker does before it sends the debit.

Writes DIR/bench-workers.json and prints a table. Needs a PostgreSQL server
(``PG_DSN``, else the local one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg

from evaluation.scratch_database import scratch_database_blocking, server_dsn
from saga import AccountRef, ServiceClients, services
from saga.drive import batch
from saga.logs.postgres import PostgresSagaLog
from saga.submission import submit
from server.process import REPO_ROOT, ServerProcess

SERVER_DSN = server_dsn()
TICKS = os.sysconf("SC_CLK_TCK")
ENDED = "SELECT count(*) FROM saga_sagas WHERE state IN ('COMPLETED', 'COMPENSATED', 'FAILED')"


@dataclass
class Run:
    log: str
    processes: int
    transfers: int
    seconds: float
    cpu_services: float
    cpu_orchestrators: float
    #: Everything else the machine did meanwhile: PostgreSQL above all, and this harness polling.
    cpu_rest: float

    @property
    def rate(self) -> float:
        return self.transfers / self.seconds


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine: PostgreSQL's short-lived backends are counted only here."""
    user, nice, system, _idle, _iowait, irq, softirq = (
        int(field) for field in Path("/proc/stat").read_text().split()[1:8]
    )
    return (user + nice + system + irq + softirq) / TICKS


def saga_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "saga", *arguments]


async def plan(source: ServerProcess, target: ServerProcess, transfers: int) -> list[batch.PlannedTransfer]:
    async with ServiceClients() as reader:
        before = await services.snapshot(reader, [source.url, target.url])
    return batch.plan(batch.Workload(transfers, max_amount=100, seed=1), source.url, target.url, before)


def sqlite_run(source: ServerProcess, target: ServerProcess, transfers: int, folder: Path) -> Run:
    command = saga_command(
        "batch", "--source-url", source.url, "--target-url", target.url, "--transfers", str(transfers),
        "--concurrency", "64", "--db", str(folder / f"{uuid.uuid4().hex}.db"), "--no-audit", "--json",
    )  # fmt: skip
    servers = [source.pid, target.pid]
    before = cpu_seconds(servers), machine_cpu_seconds()
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    orchestrator_cpu = 0.0
    while process.poll() is None:
        orchestrator_cpu = max(orchestrator_cpu, cpu_seconds([process.pid]))
        time.sleep(0.05)
    report = json.loads(process.stdout.read().decode().splitlines()[-1]) if process.stdout else {}
    services_cpu = cpu_seconds(servers) - before[0]
    return Run(
        "sqlite",
        1,
        transfers,
        report["seconds"],
        services_cpu,
        orchestrator_cpu,
        machine_cpu_seconds() - before[1] - services_cpu - orchestrator_cpu,
    )


def start_workers(dsn: str, count: int, folder: Path) -> list[subprocess.Popen[bytes]]:
    workers = []
    for number in range(count):
        err = open(folder / f"worker-{number}.err", "wb")  # noqa: SIM115 - the child writes it until it ends
        workers.append(
            subprocess.Popen(
                saga_command("worker", "--db", dsn, "--concurrency", "64", "--worker-id", f"bench-{number}"),
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        )
        err.close()
    # Ready once each has said so: imports and the LISTEN connection are not part of the measure.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all("driving sagas" in (folder / f"worker-{n}.err").read_text() for n in range(count)):
            return workers
        time.sleep(0.05)
    raise RuntimeError("workers did not start")


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait(timeout=60)


async def count_ended(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval(ENDED))
    finally:
        await connection.close()


async def span_seconds(dsn: str) -> float:
    connection = await asyncpg.connect(dsn)
    try:
        first = await connection.fetchval("SELECT min(at_ms) FROM saga_events WHERE kind = 'claim'")
        last = await connection.fetchval("SELECT max(updated_at_ms) FROM saga_sagas")
    finally:
        await connection.close()
    return float(last - first) / 1000


def postgres_run(
    source: ServerProcess, target: ServerProcess, planned: list[batch.PlannedTransfer], count: int, folder: Path
) -> Run:
    with scratch_database_blocking("bench_workers", SERVER_DSN) as dsn:

        async def submit_all() -> None:
            log = await PostgresSagaLog.open(dsn, pool_size=8)
            slots = asyncio.Semaphore(8)

            async def one(transfer: batch.PlannedTransfer) -> None:
                async with slots:
                    await submit(log, transfer.source, transfer.target, transfer.amount)

            try:
                await asyncio.gather(*(one(transfer) for transfer in planned))
            finally:
                await log.close()

        asyncio.run(submit_all())
        servers = [source.pid, target.pid]
        workers = start_workers(dsn, count, folder)
        before = cpu_seconds(servers), machine_cpu_seconds()
        started = cpu_seconds([worker.pid for worker in workers])
        try:
            peak = started
            while asyncio.run(count_ended(dsn)) < len(planned):
                peak = max(peak, cpu_seconds([worker.pid for worker in workers]))
                time.sleep(0.2)
            peak = max(peak, cpu_seconds([worker.pid for worker in workers]))
            services_cpu = cpu_seconds(servers) - before[0]
            rest = machine_cpu_seconds() - before[1] - services_cpu - (peak - started)
        finally:
            stop_workers(workers)
        return Run(
            "postgresql", count, len(planned), asyncio.run(span_seconds(dsn)), services_cpu, peak - started, rest
        )


def submit_to_first_request(source: ServerProcess, target: ServerProcess, samples: int, folder: Path) -> list[float]:
    with scratch_database_blocking("bench_workers", SERVER_DSN) as dsn:
        workers = start_workers(dsn, 2, folder)
        try:

            async def measure() -> list[float]:
                log = await PostgresSagaLog.open(dsn, pool_size=2)
                delays = []
                try:
                    for _ in range(samples):
                        await asyncio.sleep(0.05)  # idle workers between submissions
                        submitted_ms = time.time_ns() / 1e6
                        transaction_id = await submit(
                            log, AccountRef(source.url, "a0"), AccountRef(target.url, "b0"), 1
                        )
                        while True:
                            debiting = [
                                event
                                for event in await log.history(transaction_id)
                                if event.kind == "state" and event.state == "DEBITING"
                            ]
                            if debiting:
                                delays.append(debiting[0].at_ms - submitted_ms)
                                break
                            await asyncio.sleep(0.005)
                finally:
                    await log.close()
                return delays

            return asyncio.run(measure())
        finally:
            stop_workers(workers)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.bench_workers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transfers", type=int, default=2_000)
    parser.add_argument("--samples", type=int, default=200, help="submissions timed to their first request")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "evaluation" / "bench-results")
    args = parser.parse_args(argv)
    accounts_a = {f"a{i}": 10**9 for i in range(50)}
    accounts_b = {f"b{i}": 10**9 for i in range(50)}
    runs: list[Run] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-workers-") as scratch,
        ServerProcess(accounts_a, credit_fault_rate=0.0) as source,
        ServerProcess(accounts_b, credit_fault_rate=0.3, fault_seed=1) as target,
    ):
        folder = Path(scratch)
        planned = asyncio.run(plan(source, target, args.transfers))
        runs.append(sqlite_run(source, target, args.transfers, folder))
        for count in (1, 2, 4):
            runs.append(postgres_run(source, target, planned, count, folder))
        delays = submit_to_first_request(source, target, args.samples, folder)
    sqlite_rate = runs[0].rate
    lines = [
        f"{'log':<11} {'processes':>9} {'transfers/s':>12} {'vs sqlite':>10} "
        f"{'cpu s: services':>16} {'orchestrators':>14} {'postgres, rest':>15}"
    ]
    for run in runs:
        lines.append(
            f"{run.log:<11} {run.processes:>9} {run.rate:>12.1f} {run.rate / sqlite_rate:>10.2f} "
            f"{run.cpu_services:>16.1f} {run.cpu_orchestrators:>14.1f} {run.cpu_rest:>15.1f}"
        )
    p50, p99 = quantile(delays, 0.5), quantile(delays, 0.99)
    lines.append(
        f"submit to first request, two idle workers: p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(delays)} samples)"
    )
    two = next(run for run in runs if run.log == "postgresql" and run.processes == 2)
    lines.append(
        f"target: two PostgreSQL workers >= one SQLite process: {'met' if two.rate >= sqlite_rate else 'NOT met'}; "
        f"target: p50 < 100 ms: {'met' if p50 < 100 else 'NOT met'}; cores: {os.cpu_count()}"
    )
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "runs": [asdict(run) | {"transfers_per_second": round(run.rate, 1)} for run in runs],
        "submit_to_first_request_ms": {"p50": round(p50, 1), "p99": round(p99, 1), "samples": len(delays)},
        "cores": os.cpu_count(),
    }
    (args.out / "bench-workers.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
