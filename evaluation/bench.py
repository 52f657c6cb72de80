"""``make bench``: throughput and latency, measured side by side in one run on this machine.

    python -m evaluation.bench [--quick] [--out DIR]

(a) raw /debit requests/s through the generated client at concurrency 64,
    against a bare ASGI app under the same server and client settings, with
    httpx's default transport and with the aiohttp transport;
(b) the targets, every run with faults off: the saga (the real accounts
    service, memory store; the SQLite saga log and an in-memory one) at
    concurrency 1 and 64, beside two yardsticks against the bare ledger
    (evaluation/bare_ledger.py, the brief's four routes over a dict):
    - the ceiling: the generated client on the orchestrator's own transport
      (saga.clients.ServiceClients), a debit then a credit per transfer, no
      log, no retries; at concurrency 1 (p50) and 64 (transfers/s, and this
      process's CPU per request); and, for information, the same against the
      real service, which tells what the service costs from what the saga does;
    - the naive loop (evaluation/naive_baseline.py: sequential, one
      httpx.Client, no retries, no log);
    and the saga as a fraction of each, in latency and throughput; the
    orchestrator's CPU per request (getrusage of this process, the SQLite
    log's writer thread included), and the SQLite log's commits per transfer
    at concurrency 1 (one fsync each: synchronous=FULL). Each kind runs in
    rounds, one run of every kind per round, taken as one run at the end;
(c) saga transfers/s at concurrency 1, 8, 64 and 256 with 30% credit faults,
    with either log, and the naive loop against the same faults: informational;
(d) ledger memory per recorded transaction at 1,000,000 records.

Every latency is one transfer's, from the call to its return, with as many
transfers in flight as the concurrency says: each worker starts its next one
as its last ends. Numbers go to DIR/bench.json and a chart to DIR/bench.png.
Compare the ratios: absolute rates move with whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import httpx

from evaluation.naive_baseline import NaiveResult, naive_transfers
from generated_client.accounts import Client
from generated_client.accounts.api.ledger import credit, debit
from generated_client.accounts.models import LedgerRequest, LedgerResult
from saga import AccountRef, MemorySagaLog, Orchestrator, SagaLog, SqliteSagaLog, TransferResult, fast_transport
from saga.clients import ServiceClients
from server.ledger import DEBIT, Ledger
from server.process import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

#: Every target, each measured with faults off.
TARGETS = {
    "p50_at_1_vs_naive": 2.0,
    "p50_at_1_vs_ceiling": 1.5,
    "completed_at_64_vs_ceiling": 0.85,
    "cpu_per_request_at_64_vs_ceiling": 1.5,
    "saga_efficiency_at_64": 0.8,
    "durable_vs_memory_throughput": 0.9,
    "fsyncs_per_transfer_at_1": 2.0,
    "ledger_bytes_per_record": 400,
    "debit_vs_bare_asgi": 0.6,
}
#: Targets met at or below their number; every other one is met at or above it.
AT_MOST = frozenset(
    {
        "p50_at_1_vs_naive",
        "p50_at_1_vs_ceiling",
        "cpu_per_request_at_64_vs_ceiling",
        "fsyncs_per_transfer_at_1",
        "ledger_bytes_per_record",
    }
)
#: What each target divides, as the table prints it.
TARGET_MEANINGS = {
    "p50_at_1_vs_naive": "saga p50 at 1 (SQLite log) / naive loop p50",
    "p50_at_1_vs_ceiling": "saga p50 at 1 (SQLite log) / ceiling p50 at 1",
    "completed_at_64_vs_ceiling": "saga completed/s at 64 / ceiling's at 64",
    "cpu_per_request_at_64_vs_ceiling": "orchestrator CPU/request at 64 / ceiling's",
    "saga_efficiency_at_64": "saga requests/s at 64 / raw /debit's, same server",
    "durable_vs_memory_throughput": "saga transfers/s at 64, SQLite log / memory log",
    "fsyncs_per_transfer_at_1": "SQLite log commits per transfer at 1",
    "ledger_bytes_per_record": "ledger bytes per recorded transaction",
    "debit_vs_bare_asgi": "raw /debit req/s at 64 / bare ASGI app's",
}


class BareServerProcess(ServerProcess):
    def command(self, fd: int, workdir: Path) -> list[str]:
        return [sys.executable, "-m", "evaluation.bare_server", "--fd", str(fd)]


class BareLedgerProcess(ServerProcess):
    """evaluation/bare_ledger.py, served as ``python -m server`` is, with the same opening balances."""

    def command(self, fd: int, workdir: Path) -> list[str]:
        command = [sys.executable, "-m", "evaluation.bare_ledger", "--fd", str(fd)]
        if self.accounts is not None:
            accounts_file = workdir / "accounts.json"
            accounts_file.write_text(json.dumps(self.accounts), encoding="utf-8")
            command += ["--accounts", str(accounts_file)]
        return command


@dataclass
class RawResult:
    target: str
    transport: str
    concurrency: int
    requests: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


@dataclass
class SagaResult:
    log: str
    concurrency: int
    transfers: int
    completed: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    #: This process's CPU time (user + system, every thread) over the run.
    cpu_seconds: float = 0.0
    #: Commits of the SQLite log over the run, one fsync each; None for the memory log.
    commits: int | None = None
    #: Every transfer's result, with its seconds from the call to its return.
    timed: list[tuple[TransferResult, float]] = field(default_factory=list, repr=False)

    @property
    def rate(self) -> float:
        return self.transfers / self.seconds

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_seconds * 1000 / self.requests

    @property
    def fsyncs_per_transfer(self) -> float | None:
        return None if self.commits is None else self.commits / self.transfers

    @property
    def completed_rate(self) -> float:
        return self.completed / self.seconds

    @property
    def request_rate(self) -> float:
        return self.requests / self.seconds

    @property
    def requests_per_transfer(self) -> float:
        return self.requests / self.transfers

    def joined(self, later: SagaResult) -> SagaResult:
        """This run and a later one on the same log kind and concurrency as one."""
        timed = self.timed + later.timed
        latencies = [seconds for _, seconds in timed]
        return SagaResult(
            self.log,
            self.concurrency,
            self.transfers + later.transfers,
            self.completed + later.completed,
            self.requests + later.requests,
            self.seconds + later.seconds,
            quantile(latencies, 0.5) * 1000,
            quantile(latencies, 0.99) * 1000,
            self.cpu_seconds + later.cpu_seconds,
            None if self.commits is None or later.commits is None else self.commits + later.commits,
            timed,
        )


@dataclass
class LoopResult:
    """A yardstick's run: the ceiling, or the naive loop; two requests per transfer, none retried."""

    name: str
    concurrency: int
    transfers: int
    completed: int
    seconds: float
    #: This process's CPU time (user + system, every thread) over the run.
    cpu_seconds: float
    #: Each transfer's seconds from its first request to its last answer.
    latencies: list[float] = field(default_factory=list, repr=False)

    @property
    def rate(self) -> float:
        return self.transfers / self.seconds

    @property
    def completed_rate(self) -> float:
        return self.completed / self.seconds

    @property
    def p50_ms(self) -> float:
        return quantile(self.latencies, 0.5) * 1000

    @property
    def p99_ms(self) -> float:
        return quantile(self.latencies, 0.99) * 1000

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_seconds * 1000 / (2 * self.transfers)

    def joined(self, later: LoopResult) -> LoopResult:
        """This run and a later one of the same kind as one: rounds of runs put every kind under the same load."""
        return LoopResult(
            self.name,
            self.concurrency,
            self.transfers + later.transfers,
            self.completed + later.completed,
            self.seconds + later.seconds,
            self.cpu_seconds + later.cpu_seconds,
            self.latencies + later.latencies,
        )


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def transfer_pairs(transfers: int) -> list[tuple[str, str]]:
    """(source, target) user ids among user0..user63, never one to itself."""
    pairs = [(f"user{i % 64}", f"user{(i * 7 + 1) % 64}") for i in range(transfers)]
    return [(source, target) for source, target in pairs if source != target]


async def closed_loop(
    pairs: Sequence[tuple[str, str]], concurrency: int, transfer: Callable[[str, str], Awaitable[T]]
) -> list[tuple[T, float]]:
    """Each pair through ``transfer`` by ``concurrency`` workers, each starting its next as its last returns.

    Returns every outcome with its seconds from the call to the return.
    """
    pending = iter(pairs)
    timed: list[tuple[T, float]] = []

    async def worker() -> None:
        for source, target in pending:
            began = time.perf_counter()
            outcome = await transfer(source, target)
            timed.append((outcome, time.perf_counter() - began))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return timed


async def ceiling_run(url: str, concurrency: int, transfers: int) -> LoopResult:
    """A debit then a credit per transfer through the generated client, as the orchestrator builds it; nothing else.

    No log, no retries, no check of the answers beyond their being a
    LedgerResult: the most any saga on this client stack could do.
    """
    prefix = uuid.uuid4().hex[:8]
    numbers = iter(range(1 << 62))
    async with ServiceClients(connections=concurrency * 2) as clients:
        client = clients.client_for(url)

        async def transfer(source: str, target: str) -> bool:
            transaction_id = f"ceiling-{prefix}-{next(numbers)}"
            debited = await debit.asyncio(client=client, body=LedgerRequest(source, 1), transaction_id=transaction_id)
            if not isinstance(debited, LedgerResult):
                return False
            credited = await credit.asyncio(client=client, body=LedgerRequest(target, 1), transaction_id=transaction_id)
            return isinstance(credited, LedgerResult)

        await closed_loop(transfer_pairs(20), 1, transfer)  # warm the pool and the server
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        timed = await closed_loop(transfer_pairs(transfers), concurrency, transfer)
        seconds = time.perf_counter() - started
        cpu_seconds = _cpu_seconds() - cpu_before
    return LoopResult(
        "ceiling",
        concurrency,
        len(timed),
        sum(1 for completed, _ in timed if completed),
        seconds,
        cpu_seconds,
        [latency for _, latency in timed],
    )


def naive_run(url: str, transfers: int) -> LoopResult:
    """The naive loop (evaluation/naive_baseline.py), with this process's CPU over it."""
    naive_transfers(url, transfer_pairs(20))  # warm the server
    cpu_before = _cpu_seconds()
    result: NaiveResult = naive_transfers(url, transfer_pairs(transfers))
    cpu_seconds = _cpu_seconds() - cpu_before
    return LoopResult(
        "naive", 1, result.transfers, result.completed, result.seconds, cpu_seconds, list(result.latencies)
    )


def transports() -> dict[str, Callable[[], httpx.AsyncBaseTransport]]:
    return {
        "httpx-default": lambda: httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=512)),
        "aiohttp": lambda: fast_transport(max_connections=512),
    }


async def raw_debits(url: str, transport_name: str, concurrency: int, requests: int) -> RawResult:
    """``requests`` debits of 1 through the generated client, ``concurrency`` in flight at once."""
    transport = transports()[transport_name]()
    http = httpx.AsyncClient(base_url=url, transport=transport)
    client = Client(base_url=url, raise_on_unexpected_status=True).set_async_httpx_client(http)
    body = LedgerRequest(user_id="alice", amount=1)
    prefix = uuid.uuid4().hex[:8]
    next_id = 0

    async def worker(count: int) -> None:
        nonlocal next_id
        for _ in range(count):
            next_id += 1
            answer = await debit.asyncio(client=client, body=body, transaction_id=f"raw-{prefix}-{next_id}")
            if not isinstance(answer, LedgerResult):
                raise RuntimeError(f"raw debit failed: {answer}")

    await worker(20)  # warm the pool and the server
    per_worker = requests // concurrency
    started = time.perf_counter()
    await asyncio.gather(*(worker(per_worker) for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    await http.aclose()
    return RawResult(url, transport_name, concurrency, per_worker * concurrency, seconds)


async def saga_run(url: str, log_kind: str, concurrency: int, transfers: int, db_dir: Path) -> SagaResult:
    log: SagaLog
    sqlite_log: SqliteSagaLog | None = None
    if log_kind == "sqlite":
        log = sqlite_log = await SqliteSagaLog.open(db_dir / f"bench-{concurrency}-{uuid.uuid4().hex[:6]}.db")
    else:
        log = MemorySagaLog(exclusive=True)
    async with Orchestrator(log, concurrency=concurrency) as orchestrator:

        async def transfer(source: str, target: str) -> TransferResult:
            return await orchestrator.transfer(AccountRef(url, source), AccountRef(url, target), 1)

        commits_before = sqlite_log.commits if sqlite_log is not None else 0
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        timed = await closed_loop(transfer_pairs(transfers), concurrency, transfer)
        seconds = time.perf_counter() - started
        cpu_seconds = _cpu_seconds() - cpu_before
        commits = sqlite_log.commits - commits_before if sqlite_log is not None else None
    await log.close()
    results = [result for result, _ in timed]
    latencies = [latency for _, latency in timed]
    return SagaResult(
        log_kind,
        concurrency,
        len(results),
        sum(1 for result in results if result.state == "COMPLETED"),
        sum(len(result.attempts) for result in results),
        seconds,
        quantile(latencies, 0.5) * 1000,
        quantile(latencies, 0.99) * 1000,
        cpu_seconds,
        commits,
        timed,
    )


#: The parts of one transfer's time, in the order the budget prints them.
BUDGET_PARTS = ("log commits", "client stack", "server", "everything else")


def transfer_split_us(result: TransferResult, seconds: float) -> dict[str, int]:
    """One transfer's ``seconds`` (call to return) split into BUDGET_PARTS, in microseconds.

    Log commits are every commit the transfer waited for, its creation
    included; the server is what each answer's ``Server-Timing`` total says;
    the client stack is the rest of each request (the network included);
    everything else is the orchestrator between them.
    """
    total_us = round(seconds * 1_000_000)
    server_us = sum(attempt.server_us or 0 for attempt in result.attempts)
    client_us = sum(attempt.client_us or 0 for attempt in result.attempts)
    split = {"log commits": result.log_wait_us, "client stack": client_us, "server": server_us}
    return split | {"everything else": total_us - sum(split.values())}


def latency_budget(saga: SagaResult) -> list[tuple[str, float]]:
    """Where one transfer's time goes: (part, p50 in ms), the whole transfer first.

    ``saga`` ran at concurrency 1, so no part waits on another transfer. The
    parts come from the attempts of each transfer (saga.records.Attempt); each
    is the median over the transfers, so they need not add up to the median
    of the whole.
    """
    splits = [transfer_split_us(result, seconds) for result, seconds in saga.timed]
    rows = [("transfer, call to return", quantile([seconds for _, seconds in saga.timed], 0.5) * 1000)]
    return rows + [(part, quantile([split[part] / 1000 for split in splits], 0.5)) for part in BUDGET_PARTS]


def print_latency_budget(saga: SagaResult) -> None:
    print(f"latency budget of one transfer, saga {saga.log} log, concurrency {saga.concurrency} (p50):")
    for part, milliseconds in latency_budget(saga):
        print(f"  {part:40} {milliseconds:8.2f} ms")


def saga_row(result: SagaResult) -> dict[str, Any]:
    """``result`` for bench.json: its counts and rates, without every transfer."""
    return {item.name: getattr(result, item.name) for item in fields(result) if item.name != "timed"} | {
        "rate": result.rate,
        "completed_rate": result.completed_rate,
        "request_rate": result.request_rate,
        "requests_per_transfer": result.requests_per_transfer,
        "cpu_ms_per_request": result.cpu_ms_per_request,
        "fsyncs_per_transfer": result.fsyncs_per_transfer,
    }


def loop_row(result: LoopResult) -> dict[str, Any]:
    return {item.name: getattr(result, item.name) for item in fields(result) if item.name != "latencies"} | {
        "rate": result.rate,
        "completed_rate": result.completed_rate,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "cpu_ms_per_request": result.cpu_ms_per_request,
    }


def fractions(saga: SagaResult, ceiling: LoopResult, naive: LoopResult) -> dict[str, float]:
    """The saga as a fraction of the ceiling at its concurrency, and of the naive loop, in latency and throughput."""
    return {
        "p50_vs_ceiling": saga.p50_ms / ceiling.p50_ms,
        "p50_vs_naive": saga.p50_ms / naive.p50_ms,
        "completed_rate_vs_ceiling": saga.completed_rate / ceiling.completed_rate,
        "completed_rate_vs_naive": saga.completed_rate / naive.completed_rate,
        "cpu_per_request_vs_ceiling": saga.cpu_ms_per_request / ceiling.cpu_ms_per_request,
    }


def describe_saga(outcome: SagaResult, faults: str) -> str:
    return (
        f"saga {outcome.log:6} c={outcome.concurrency:<3} {faults:10} {outcome.rate:7.1f} transfers/s "
        f"({outcome.completed_rate:7.1f} completed/s), {outcome.request_rate:7.1f} req/s, "
        f"{outcome.requests_per_transfer:.2f} req/transfer, "
        f"p50 {outcome.p50_ms:.1f} ms, p99 {outcome.p99_ms:.1f} ms, "
        f"{outcome.cpu_ms_per_request:.2f} ms CPU/request"
        + (f", {outcome.fsyncs_per_transfer:.2f} fsyncs/transfer" if outcome.fsyncs_per_transfer is not None else "")
    )


def describe_loop(result: LoopResult, against: str) -> str:
    return (
        f"{result.name:7} c={result.concurrency:<3} against {against:12} {result.rate:7.1f} transfers/s "
        f"({result.completed_rate:7.1f} completed/s), p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
        f"{result.cpu_ms_per_request:.3f} ms CPU/request"
    )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ledger_bytes_per_record(records: int) -> float:
    """tracemalloc's count of what the ledger holds per recorded (transaction_id, operation)."""
    ids = [str(uuid.uuid4()) for _ in range(records)]
    gc.collect()
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    ledger = Ledger({"alice": 10**15})
    for transaction_id in ids:
        ledger.apply(DEBIT, transaction_id, "alice", 1)
    used = tracemalloc.get_traced_memory()[0] - baseline
    tracemalloc.stop()
    assert len(ledger) == records
    # The ids arrive with each request, so they count as the ledger's to keep.
    id_bytes = sum(sys.getsizeof(transaction_id) for transaction_id in ids)
    return (used + id_bytes) / records


def machine() -> dict[str, Any]:
    import os

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def chart(results: list[SagaResult], raw_rate: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for log_kind, style in (("sqlite", "o-"), ("memory", "s--")):
        points = sorted((r.concurrency, r.request_rate) for r in results if r.log == log_kind)
        axis.plot(
            [c for c, _ in points], [rate for _, rate in points], style, label=f"saga requests/s ({log_kind} log)"
        )
        transfers = sorted((r.concurrency, r.rate) for r in results if r.log == log_kind)
        axis.plot(
            [c for c, _ in transfers],
            [rate for _, rate in transfers],
            style,
            alpha=0.5,
            label=f"saga transfers/s ({log_kind} log)",
        )
    axis.axhline(raw_rate, color="grey", linestyle=":", label="raw /debit requests/s at 64")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("concurrency (sagas in flight)")
    axis.set_ylabel("per second")
    axis.set_title("Saga throughput against concurrency (30% credit faults)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    parser.add_argument("--out", type=Path, default=ROOT / "evaluation" / "bench-results")
    args = parser.parse_args(argv)
    scale = 0.2 if args.quick else 1.0
    args.out.mkdir(parents=True, exist_ok=True)

    accounts = {f"user{i}": 10**12 for i in range(64)} | {"alice": 10**15}
    print(f"machine: {machine()}")
    raw: list[RawResult] = []
    with (
        ServerProcess(accounts, credit_fault_rate=0.0) as real,
        ServerProcess(accounts, credit_fault_rate=0.0, log_level="info") as logged,
        BareServerProcess() as bare,
    ):
        requests = int(6_000 * scale)
        for transport_name in ("httpx-default", "aiohttp"):
            for concurrency in (1, 16, 64):
                for label, server in (("debit", real), ("bare-asgi", bare)):
                    result = asyncio.run(
                        raw_debits(
                            server.url, transport_name, concurrency, requests if concurrency > 1 else requests // 4
                        )
                    )
                    result.target = label
                    raw.append(result)
                    print(f"raw {label:10} {transport_name:14} c={concurrency:<3} {result.rate:8.0f} req/s")
        with_log = asyncio.run(raw_debits(logged.url, "aiohttp", 64, requests))
        with_log.target = "debit+request-log"
        raw.append(with_log)
        print(f"raw debit with a log line per request  c=64  {with_log.rate:8.0f} req/s")

    # The targets: faults off everywhere; the saga against the real service, the yardsticks against the bare ledger.
    target_sagas: list[SagaResult] = []
    adjacent_raw: list[RawResult] = []
    with (
        ServerProcess(accounts, credit_fault_rate=0.0) as service,
        BareLedgerProcess(accounts) as bare_ledger,
        tempfile.TemporaryDirectory() as scratch,
    ):

        def saga_without_faults(log_kind: str, concurrency: int, transfers: int) -> SagaResult:
            return asyncio.run(saga_run(service.url, log_kind, concurrency, transfers, Path(scratch)))

        def ceiling_at(concurrency: int, transfers: int, against: ServerProcess = bare_ledger) -> LoopResult:
            return asyncio.run(ceiling_run(against.url, concurrency, transfers))

        # Every run is cut in rounds, one of each kind per round, so that a change of the machine's load
        # falls on every kind alike; the rounds of each kind are then taken as one run.
        at_one, at_64 = int(500 * scale), int(3_000 * scale)
        rounds, rounds_at_64 = 5, 3
        ceiling_runs: list[LoopResult] = []
        naive_runs: list[LoopResult] = []
        sqlite_runs: list[SagaResult] = []
        memory_runs: list[SagaResult] = []
        service_ceiling_runs: list[LoopResult] = []
        for _ in range(rounds):
            ceiling_runs.append(ceiling_at(1, at_one // rounds))
            naive_runs.append(naive_run(bare_ledger.url, at_one // rounds))
            sqlite_runs.append(saga_without_faults("sqlite", 1, at_one // rounds))
            memory_runs.append(saga_without_faults("memory", 1, at_one // rounds))
            # The ceiling on the real service too, to tell what the service costs from what the saga does.
            service_ceiling_runs.append(ceiling_at(1, at_one // rounds, service))
        ceiling_1 = functools.reduce(LoopResult.joined, ceiling_runs)
        naive = functools.reduce(LoopResult.joined, naive_runs)
        service_ceiling_1 = functools.reduce(LoopResult.joined, service_ceiling_runs)
        sqlite_1 = functools.reduce(SagaResult.joined, sqlite_runs)
        memory_1 = functools.reduce(SagaResult.joined, memory_runs)
        print(describe_loop(ceiling_1, "bare ledger"))
        print(describe_loop(naive, "bare ledger"))
        print(describe_loop(service_ceiling_1, "the service"))
        target_sagas.extend((sqlite_1, memory_1))
        for outcome in target_sagas:
            print(describe_saga(outcome, "no faults"))

        # At 64 too, with the raw /debit that saga_efficiency_at_64 divides by.
        ceiling_runs, sqlite_runs, memory_runs, service_ceiling_runs = [], [], [], []
        for _ in range(rounds_at_64):
            adjacent_raw.append(asyncio.run(raw_debits(service.url, "aiohttp", 64, requests // rounds_at_64)))
            ceiling_runs.append(ceiling_at(64, at_64 // rounds_at_64))
            sqlite_runs.append(saga_without_faults("sqlite", 64, at_64 // rounds_at_64))
            memory_runs.append(saga_without_faults("memory", 64, at_64 // rounds_at_64))
            service_ceiling_runs.append(ceiling_at(64, at_64 // rounds_at_64, service))
        ceiling_64 = functools.reduce(LoopResult.joined, ceiling_runs)
        service_ceiling_64 = functools.reduce(LoopResult.joined, service_ceiling_runs)
        target_sagas.append(functools.reduce(SagaResult.joined, sqlite_runs))
        target_sagas.append(functools.reduce(SagaResult.joined, memory_runs))
        for outcome in target_sagas[-2:]:
            print(describe_saga(outcome, "no faults"))
        print(describe_loop(ceiling_64, "bare ledger"))
        print(describe_loop(service_ceiling_64, "the service"))
        print(f"raw debit beside the saga runs  c=64  {[round(r.rate) for r in adjacent_raw]} req/s")

    # Informational: the saga and the naive loop against 30% credit faults.
    sagas: list[SagaResult] = []
    with (
        ServerProcess(accounts, credit_fault_rate=0.3, fault_seed=1) as server,
        tempfile.TemporaryDirectory() as scratch,
    ):
        naive_with_faults = naive_run(server.url, int(1_000 * scale))
        print(describe_loop(naive_with_faults, "30% faults"))
        for concurrency, transfers in ((1, 300), (8, 1_000), (64, 3_000), (256, 3_000)):
            for log_kind in ("sqlite", "memory"):
                outcome = asyncio.run(
                    saga_run(server.url, log_kind, concurrency, int(transfers * scale), Path(scratch))
                )
                sagas.append(outcome)
                print(describe_saga(outcome, "30% faults"))

    records = 1_000_000 if not args.quick else 100_000
    bytes_per_record = ledger_bytes_per_record(records)
    print(f"ledger: {bytes_per_record:.0f} bytes per recorded transaction at {records} records")

    def raw_rate(target: str, transport_name: str = "aiohttp", concurrency: int = 64) -> float:
        return next(
            r.rate for r in raw if (r.target, r.transport, r.concurrency) == (target, transport_name, concurrency)
        )

    def saga_at(log_kind: str, concurrency: int) -> SagaResult:
        return next(r for r in target_sagas if (r.log, r.concurrency) == (log_kind, concurrency))

    ceilings = {1: ceiling_1, 64: ceiling_64}
    saga_fractions = {
        f"{log_kind}_at_{concurrency}": fractions(saga_at(log_kind, concurrency), ceilings[concurrency], naive)
        for log_kind in ("sqlite", "memory")
        for concurrency in (1, 64)
    }
    measured = {
        "p50_at_1_vs_naive": saga_fractions["sqlite_at_1"]["p50_vs_naive"],
        "p50_at_1_vs_ceiling": saga_fractions["sqlite_at_1"]["p50_vs_ceiling"],
        "completed_at_64_vs_ceiling": saga_fractions["sqlite_at_64"]["completed_rate_vs_ceiling"],
        "cpu_per_request_at_64_vs_ceiling": saga_fractions["sqlite_at_64"]["cpu_per_request_vs_ceiling"],
        "saga_efficiency_at_64": saga_at("sqlite", 64).request_rate
        / (sum(r.rate for r in adjacent_raw) / len(adjacent_raw)),
        "durable_vs_memory_throughput": saga_at("sqlite", 64).rate / saga_at("memory", 64).rate,
        "fsyncs_per_transfer_at_1": saga_at("sqlite", 1).fsyncs_per_transfer or 0.0,
        "ledger_bytes_per_record": bytes_per_record,
        "debit_vs_bare_asgi": raw_rate("debit") / raw_rate("bare-asgi"),
        "p50_at_1_vs_ceiling_on_service": saga_at("sqlite", 1).p50_ms / service_ceiling_1.p50_ms,
        "completed_at_64_vs_ceiling_on_service": saga_at("sqlite", 64).completed_rate
        / service_ceiling_64.completed_rate,
        "cpu_per_request_at_64_vs_ceiling_on_service": saga_at("sqlite", 64).cpu_ms_per_request
        / service_ceiling_64.cpu_ms_per_request,
        "ceiling_on_service_vs_bare_ledger_p50_at_1": service_ceiling_1.p50_ms / ceiling_1.p50_ms,
        "ceiling_on_service_vs_bare_ledger_at_64": service_ceiling_64.completed_rate / ceiling_64.completed_rate,
        "aiohttp_vs_httpx_default_at_64": raw_rate("debit") / raw_rate("debit", "httpx-default"),
        "request_log_cost_at_64": 1 - raw_rate("debit+request-log") / raw_rate("debit"),
    }
    met = {
        name: (measured[name] <= target if name in AT_MOST else measured[name] >= target)
        for name, target in TARGETS.items()
    }
    print()
    print_latency_budget(saga_at("sqlite", 1))
    print()
    print("the saga as a fraction of the ceiling (same concurrency) and of the naive loop, faults off:")
    print(
        f"{'':16} {'p50/ceiling':>12} {'p50/naive':>10} {'done/s/ceiling':>15} {'done/s/naive':>13} {'CPU/ceiling':>12}"
    )
    for row, values in saga_fractions.items():
        print(
            f"{row:16} {values['p50_vs_ceiling']:12.2f} {values['p50_vs_naive']:10.2f} "
            f"{values['completed_rate_vs_ceiling']:15.2f} {values['completed_rate_vs_naive']:13.2f} "
            f"{values['cpu_per_request_vs_ceiling']:12.2f}"
        )
    print()
    print(f"{'target':34} {'what it divides':50} {'measured':>9} {'target':>9}  verdict")
    for name, target in TARGETS.items():
        bound = "<=" if name in AT_MOST else ">="
        print(
            f"{name:34} {TARGET_MEANINGS[name]:50} {measured[name]:9.3f} {bound} {target:<6g}  "
            f"{'met' if met[name] else 'MISSED'}"
        )
    for name in (name for name in measured if name not in TARGETS):
        print(f"{name:44} (informational) {measured[name]:9.3f}")

    report = {
        "machine": machine(),
        "quick": args.quick,
        "raw": [asdict(r) | {"rate": r.rate} for r in raw],
        "raw_beside_saga_at_64": [r.rate for r in adjacent_raw],
        "ceiling": {str(concurrency): loop_row(result) for concurrency, result in ceilings.items()},
        "ceiling_on_service": {"1": loop_row(service_ceiling_1), "64": loop_row(service_ceiling_64)},
        "naive": loop_row(naive),
        "saga_without_faults": [saga_row(r) for r in target_sagas],
        "saga_fractions": saga_fractions,
        "latency_budget_at_1": dict(latency_budget(saga_at("sqlite", 1))),
        "naive_with_faults": loop_row(naive_with_faults),
        "saga_with_faults": [saga_row(r) for r in sagas],
        "ledger_bytes_per_record": bytes_per_record,
        "ratios": measured,
        "targets": {name: {"target": TARGETS[name], "measured": measured[name], "met": met[name]} for name in TARGETS},
    }
    (args.out / "bench.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    chart(sagas, raw_rate("debit"), args.out / "bench.png")
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
