"""``make bench``, last part: one accounts service as one replica and as two on one PostgreSQL database.

    python -m evaluation.bench_replicas [--transfers N] [--concurrency N] [--out DIR]

Two ``python -m server`` replicas (``r1``, ``r2``) on one fresh PostgreSQL
database; a batch of transfers between the service's own accounts (so each
saga debits and credits it), from one process with a fresh SQLite saga log,
given first only r1's URL and then both, in the order one, two, two, one so
that a drift of the machine's load shifts both sides alike. Each replica's
share is the debits, credits and compensations it answered during the run,
by its own ``/metrics``; the rate is the batch's own ``seconds`` (the
transfers, not the audit after them). Beside them, the CPU seconds of the
sagas' process and of each replica, and how busy the machine's cores were:
where two replicas add nothing, they say what does limit the rate.

Prints a table and writes DIR/bench_replicas.json. Compare the ratio of the
rates, and the shares: absolute rates move with whatever else the machine is
doing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from evaluation.bench import machine
from evaluation.bench_workers import cpu_seconds, machine_cpu_seconds
from evaluation.scratch_database import scratch_database_blocking
from saga import Orchestrator, ServiceClients, SqliteSagaLog, services
from saga.drive import batch
from server.process import REPO_ROOT, ServerProcess

ACCOUNTS = {f"user{number}": 10**12 for number in range(64)}
LEDGER_OPERATIONS = ("debit", "credit", "compensate_debit", "compensate_credit")
ORDER = ("one", "two", "two", "one")


@dataclass(frozen=True)
class Run:
    replicas: str
    transfers: int
    seconds: float
    requests: int
    #: Ledger requests each replica answered during the run, r1 first.
    answered: tuple[int, ...]
    violations: int
    #: CPU seconds during the run: this process (the sagas), each replica (r1 first), the whole machine.
    saga_cpu: float
    replica_cpu: tuple[float, ...]
    machine_cpu: float
    wall: float

    @property
    def rate(self) -> float:
        return self.transfers / self.seconds if self.seconds > 0 else 0.0

    @property
    def shares(self) -> tuple[float, ...]:
        total = sum(self.answered)
        return tuple(count / total if total else 0.0 for count in self.answered)


def ledger_requests(server: ServerProcess) -> int:
    """The debits, credits and compensations ``server`` has answered, by its own count."""
    answer = httpx.get(f"{server.url}/metrics", timeout=10)
    answer.raise_for_status()
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(answer.text)
            for sample in family.samples
            if sample.name == "accounts_requests_total" and sample.labels.get("operation") in LEDGER_OPERATIONS
        )
    )


async def one_batch(
    service: tuple[str, ...], transfers: int, concurrency: int, seed: int, scratch: Path
) -> batch.BatchReport:
    async with ServiceClients() as reader:
        before = await services.snapshot(reader, [service])
    plan = batch.plan(batch.Workload(transfers, max_amount=1_000, seed=seed), service, service, before)
    log = await SqliteSagaLog.open(scratch / f"sagas-{seed}.db")
    try:
        async with Orchestrator(log, concurrency=concurrency) as orchestrator:
            return await batch.run(orchestrator, plan, [service], before=before)
    finally:
        await log.close()


def measure(
    servers: list[ServerProcess], replicas: str, transfers: int, concurrency: int, seed: int, scratch: Path
) -> Run:
    service = tuple(server.url for server in (servers if replicas == "two" else servers[:1]))
    counted_before = [ledger_requests(server) for server in servers]
    replica_cpu_before = [cpu_seconds([server.pid]) for server in servers]
    saga_cpu_before, machine_cpu_before, started = time.process_time(), machine_cpu_seconds(), time.monotonic()
    report = asyncio.run(one_batch(service, transfers, concurrency, seed, scratch))
    wall = time.monotonic() - started
    saga_cpu, machine_cpu = time.process_time() - saga_cpu_before, machine_cpu_seconds() - machine_cpu_before
    replica_cpu = tuple(
        cpu_seconds([server.pid]) - before for server, before in zip(servers, replica_cpu_before, strict=True)
    )
    answered = tuple(ledger_requests(server) - before for server, before in zip(servers, counted_before, strict=True))
    return Run(
        replicas,
        len(report.results),
        report.seconds,
        report.requests,
        answered,
        len(report.violations),
        saga_cpu,
        replica_cpu,
        machine_cpu,
        wall,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transfers", type=int, default=1_000, help="transfers of each batch (default 1000)")
    parser.add_argument("--concurrency", type=int, default=64, help="sagas at a time (default 64)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "evaluation" / "bench-results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")

    runs: list[Run] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-replicas-") as scratch:
        database = stack.enter_context(scratch_database_blocking("bench_replicas"))
        servers = [
            stack.enter_context(ServerProcess(ACCOUNTS, extra_args=["--database", database, "--replica-id", name]))
            for name in ("r1", "r2")
        ]
        for seed, replicas in enumerate(ORDER, start=1):
            run = measure(servers, replicas, args.transfers, args.concurrency, seed, Path(scratch))
            runs.append(run)
            shares = "  ".join(f"r{number}={share:5.1%}" for number, share in enumerate(run.shares, start=1))
            replica_cpu = " ".join(f"{seconds:4.1f}" for seconds in run.replica_cpu)
            print(
                f"{replicas} replica{'s' if replicas == 'two' else ' '}  {run.rate:7.1f} transfers/s  "
                f"{run.requests} requests  {shares}  violations={run.violations}  "
                f"CPU s: sagas {run.saga_cpu:4.1f}, replicas {replica_cpu}, "
                f"machine {run.machine_cpu / run.wall:3.1f} of {os.cpu_count()} cores busy"
            )

    def mean_rate(replicas: str) -> float:
        rates = [run.rate for run in runs if run.replicas == replicas]
        return sum(rates) / len(rates)

    ratio = mean_rate("two") / mean_rate("one")
    busiest = max(max(run.shares) for run in runs if run.replicas == "two")
    print(f"two replicas vs one: {ratio:.2f}x transfers/s; busiest replica's share with two: {busiest:.1%}")
    result = {
        "machine": machine(),
        "transfers": args.transfers,
        "concurrency": args.concurrency,
        "runs": [asdict(run) | {"rate": run.rate, "shares": run.shares} for run in runs],
        "two_vs_one_transfers_per_second": ratio,
        "busiest_share_with_two": busiest,
    }
    (args.out / "bench_replicas.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if all(run.violations == 0 for run in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
