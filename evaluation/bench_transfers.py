"""``make bench``, fourth part: the transfers service against one batch process, side by side in one run.

    python -m evaluation.bench_transfers [--quick] [--out DIR] [--profile | --no-profile]

Two accounts services (memory store): bank-a holds the sources, bank-b the
targets and answers 30% of credits with a 500 (fault seed 1), as in
evaluation/bench_workers.py. Every saga log is a fresh SQLite file.

(a) completed transfers/s through the API: 64 client tasks, each sending
    ``POST /transfers`` then ``GET /transfers/{id}?wait=30`` until the
    transfer has ended, through the generated transfers client on the
    httpx-aiohttp transport, against ``python -m saga serve`` (64 sagas at a
    time); against ``python -m saga batch --no-audit --concurrency 64`` in
    one process. Both run the same planned transfers (``batch.plan`` with the
    same seed), in the order batch, API, API, batch, so that a drift of the
    machine's load shifts both sides alike. The batch's time is its own
    ``seconds`` (the transfers only, not start-up); the API's is from the first
    POST to the last transfer's end, after a warm-up that is not counted.
(b) the p50 of POST-to-201 at concurrency 1 (one client task; after each 201
    it waits, untimed, until the transfer has ended, so one saga is in flight
    at a time), against the p50 of a bare ``POST /debit`` on bank-a through
    the generated accounts client on the same transport, the two sampled in
    turn.
(c) when (a) misses (or with ``--profile``): a py-spy profile of the
    transfers service during one more API run, not counted in (a), and the
    share of its samples in each part of the process.

Prints a table and writes DIR/bench_transfers.json. Compare the ratios:
absolute rates move with whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from evaluation.bench_workers import cpu_seconds
from generated_client.accounts import Client as AccountsClient
from generated_client.accounts.api.ledger import debit
from generated_client.accounts.models import LedgerRequest, LedgerResult
from generated_client.transfers import Client as TransfersClient
from generated_client.transfers.api.transfers import create_transfer, get_transfer
from generated_client.transfers.models import AccountAt, Transfer, TransferRequest, TransferState
from saga import ServiceClients, fast_transport, services
from saga.drive import batch
from saga.service.process import TransfersProcess
from server.process import REPO_ROOT, ServerProcess

TARGETS = {"api_vs_batch_completed_at_64": 0.7, "post_201_vs_debit_p50_at_1": 3.0}
AT_MOST = frozenset({"post_201_vs_debit_p50_at_1"})
CONCURRENCY = 64
SOURCE, TARGET = "bank-a", "bank-b"
ENDED = frozenset(
    {TransferState.COMPLETED, TransferState.COMPENSATED, TransferState.FAILED, TransferState.NEEDS_ATTENTION}
)
#: How long one batch or API run may take before the benchmark gives up on it.
RUN_TIMEOUT = 180.0
#: Where a py-spy sample's time goes: the first of these met walking its stack from the leaf
#: towards the root. A frame of none of them (asyncio, json, the saga's records) is charged to
#: the nearest caller that is, and a stack with none to "the event loop and the rest".
PROFILE_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("EndWatch (saga/service/waiting.py)", ("saga/service/waiting.py",)),
    ("the app's routes (saga/service/app.py)", ("saga/service/app.py",)),
    # The service's one thread pool is the SQLite log's: its wake-ups are the log's cost.
    (
        "the saga log (saga/logs, its thread, ObservedSagaLog)",
        ("saga/logs/", "saga/telemetry/metrics.py", "futures/thread.py"),
    ),
    (
        "the orchestrator and its client stack",
        (
            "saga/orchestrator.py",
            "saga/run.py",
            "saga/steps.py",
            "saga/workflow.py",
            "saga/retry.py",
            "saga/worker.py",
            "saga/directory.py",
            "generated_client/",
            "httpx/",
            "httpx_aiohttp/",
            "aiohttp/",
            "yarl/",
            "multidict/",
        ),
    ),
    (
        "uvicorn, starlette, fastapi (and server/edge.py)",
        ("uvicorn/", "starlette/", "fastapi/", "server/edge.py", "h11/", "httptools/"),
    ),
)
REST = "the event loop and the rest"


@dataclass
class ThroughputRun:
    side: str
    transfers: int
    completed: int
    seconds: float
    #: CPU seconds over the timed span: the saga's process (the service, or the batch), the
    #: benchmark's own client (API runs only), and the two accounts services.
    cpu_sagas: float
    cpu_client: float
    cpu_banks: float
    p50_ms: float
    states: dict[str, int] = field(default_factory=dict)

    @property
    def completed_rate(self) -> float:
        return self.completed / self.seconds

    def cpu_ms_per_transfer(self, seconds: float) -> float:
        return seconds * 1000 / self.transfers


@dataclass
class Planned:
    source: str
    target: str
    amount: int


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def plan(bank_a: ServerProcess, bank_b: ServerProcess, transfers: int, seed: int) -> list[Planned]:
    """What ``saga batch --seed SEED --max-amount 100`` will run, so that the API runs the same transfers."""
    async with ServiceClients() as reader:
        before = await services.snapshot(reader, [bank_a.url, bank_b.url])
    workload = batch.Workload(transfers, max_amount=100, seed=seed)
    return [
        Planned(p.source.user_id, p.target.user_id, p.amount)
        for p in batch.plan(workload, bank_a.url, bank_b.url, before)
    ]


def batch_run(bank_a: ServerProcess, bank_b: ServerProcess, transfers: int, seed: int, folder: Path) -> ThroughputRun:
    stderr_path = folder / f"batch-{uuid.uuid4().hex[:8]}.err"
    command = [
        sys.executable, "-m", "saga", "batch", "--source-url", bank_a.url, "--target-url", bank_b.url,
        "--transfers", str(transfers), "--concurrency", str(CONCURRENCY), "--seed", str(seed),
        "--max-amount", "100", "--db", str(folder / f"batch-{uuid.uuid4().hex}.db"), "--no-audit", "--json",
    ]  # fmt: skip
    banks = [bank_a.pid, bank_b.pid]
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=stderr)
    try:
        # The batch says "running N transfers" just before it starts them: its start-up is not counted.
        started: tuple[float, float] | None = None
        last_cpu = 0.0
        deadline = time.monotonic() + RUN_TIMEOUT
        while process.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the batch took over {RUN_TIMEOUT:.0f} s")
            last_cpu = max(last_cpu, cpu_seconds([process.pid]))
            if started is None and "running " in stderr_path.read_text(errors="replace"):
                started = last_cpu, cpu_seconds(banks)
            time.sleep(0.02)
        out = process.stdout.read().decode() if process.stdout is not None else ""
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
    if process.returncode != 0 or not out.strip():
        raise RuntimeError(f"saga batch exited with {process.returncode}:\n{stderr_path.read_text()[-2000:]}")
    report = json.loads(out.strip().splitlines()[-1])
    cpu_start, banks_start = started if started is not None else (0.0, cpu_seconds(banks))
    states = {name: report[name] for name in ("completed", "compensated", "failed", "needs_attention", "pending")}
    return ThroughputRun(
        "batch",
        report["transfers"],
        report["completed"],
        report["seconds"],
        last_cpu - cpu_start,
        0.0,
        cpu_seconds(banks) - banks_start,
        report["latency_p50_ms"],
        states,
    )


@asynccontextmanager
async def transfers_client(url: str) -> AsyncIterator[TransfersClient]:
    # A wait holds its GET up to 30 s: the client must outwait it.
    http = httpx.AsyncClient(base_url=url, transport=fast_transport(max_connections=256), timeout=60.0)
    try:
        yield TransfersClient(base_url=url, raise_on_unexpected_status=True).set_async_httpx_client(http)
    finally:
        await http.aclose()


def request_of(planned: Planned) -> TransferRequest:
    return TransferRequest(AccountAt(SOURCE, planned.source), AccountAt(TARGET, planned.target), planned.amount)


async def post(client: TransfersClient, planned: Planned) -> Transfer:
    answer = await create_transfer.asyncio_detailed(
        client=client, body=request_of(planned), idempotency_key=uuid.uuid4().hex
    )
    if answer.status_code != 201 or not isinstance(answer.parsed, Transfer):
        raise RuntimeError(f"POST /transfers answered {answer.status_code}: {answer.content[:300]!r}")
    return answer.parsed


async def until_ended(client: TransfersClient, transfer: Transfer) -> TransferState:
    state = transfer.state
    while state not in ENDED:
        answer = await get_transfer.asyncio(client=client, transaction_id=transfer.transaction_id, wait=30)
        if not isinstance(answer, Transfer):
            raise RuntimeError(f"GET /transfers/{transfer.transaction_id} answered {answer}")
        state = answer.state
    return state


async def drive_through_api(
    client: TransfersClient, planned: list[Planned], concurrency: int
) -> tuple[Counter[str], list[float]]:
    states: Counter[str] = Counter()
    latencies: list[float] = []
    queue = iter(planned)

    async def one_task() -> None:
        for transfer in queue:
            started = time.perf_counter()
            state = await until_ended(client, await post(client, transfer))
            latencies.append(time.perf_counter() - started)
            states[state.value.lower()] += 1

    async with asyncio.timeout(RUN_TIMEOUT):
        await asyncio.gather(*(one_task() for _ in range(concurrency)))
    return states, latencies


def api_run(
    bank_a: ServerProcess, bank_b: ServerProcess, planned: list[Planned], folder: Path, profile: Path | None = None
) -> ThroughputRun:
    names = {SOURCE: bank_a.url, TARGET: bank_b.url}
    with TransfersProcess(names, db=folder / f"api-{uuid.uuid4().hex}.db") as service:

        async def measure() -> ThroughputRun:
            async with transfers_client(service.url) as client:
                # Warm-up, not counted: the service's first requests, connections and routes.
                await drive_through_api(client, planned[:32], 4)
                banks = [bank_a.pid, bank_b.pid]
                before = cpu_seconds([service.pid]), own_cpu_seconds(), cpu_seconds(banks)
                started = time.perf_counter()
                states, latencies = await drive_through_api(client, planned, CONCURRENCY)
                seconds = time.perf_counter() - started
                return ThroughputRun(
                    "api",
                    len(planned),
                    states["completed"],
                    seconds,
                    cpu_seconds([service.pid]) - before[0],
                    own_cpu_seconds() - before[1],
                    cpu_seconds(banks) - before[2],
                    quantile(latencies, 0.5) * 1000,
                    dict(states),
                )

        if profile is None:
            return asyncio.run(measure())
        with py_spy(service.pid, profile):
            return asyncio.run(measure())


@contextmanager
def py_spy(pid: int, output: Path) -> Iterator[None]:
    command = [
        str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid), "--format", "raw",
        "--rate", "200", "--output", str(output),
    ]  # fmt: skip
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)  # py-spy attaches before the run starts
        if spy.poll() is not None:
            raise RuntimeError(f"py-spy exited with {spy.returncode}: {spy.stderr.read() if spy.stderr else ''!r}")
        yield
    finally:
        # On SIGINT py-spy writes what it sampled, then exits.
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
        if spy.stderr is not None:
            spy.stderr.close()


def profile_shares(raw: Path) -> tuple[int, dict[str, float]]:
    """Share of py-spy's samples in each of PROFILE_PARTS, from its raw output (``root;...;leaf COUNT``)."""
    counts: Counter[str] = Counter()
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        counts[part_of(stack.split(";"))] += int(count)
    total = sum(counts.values())
    parts = [name for name, _ in PROFILE_PARTS] + [REST]
    return total, {name: counts[name] / total if total else 0.0 for name in parts}


def part_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, markers in PROFILE_PARTS:
            if any(marker in frame for marker in markers):
                return name
    return REST


async def sample_latencies(bank_a: ServerProcess, service_url: str, samples: int) -> tuple[list[float], list[float]]:
    """``samples`` bare debits and ``samples`` POSTs to 201, in turn, one at a time; milliseconds."""
    http = httpx.AsyncClient(base_url=bank_a.url, transport=fast_transport(max_connections=8))
    accounts = AccountsClient(base_url=bank_a.url, raise_on_unexpected_status=True).set_async_httpx_client(http)
    body = LedgerRequest(user_id="a0", amount=1)
    transfer = Planned("a1", "b1", 1)
    debits: list[float] = []
    posts: list[float] = []
    try:
        async with transfers_client(service_url) as client, asyncio.timeout(RUN_TIMEOUT):
            for number in range(samples + 20):
                started = time.perf_counter()
                answer = await debit.asyncio(client=accounts, body=body, transaction_id=f"p50-{uuid.uuid4().hex}")
                debit_seconds = time.perf_counter() - started
                if not isinstance(answer, LedgerResult):
                    raise RuntimeError(f"POST /debit answered {answer}")
                started = time.perf_counter()
                created = await post(client, transfer)
                post_seconds = time.perf_counter() - started
                # The first 20 of each warm the connections and both processes.
                if number >= 20:
                    debits.append(debit_seconds * 1000)
                    posts.append(post_seconds * 1000)
                await until_ended(client, created)
    finally:
        await http.aclose()
    return debits, posts


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.bench_transfers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test (under a minute)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "evaluation" / "bench-results")
    profiling = parser.add_mutually_exclusive_group()
    profiling.add_argument("--profile", action="store_true", help="profile the service even if (a) is met")
    profiling.add_argument("--no-profile", action="store_true", help="never profile the service")
    args = parser.parse_args(argv)
    transfers = 600 if args.quick else 2_000
    samples = 100 if args.quick else 300

    accounts_a = {f"a{i}": 10**12 for i in range(50)}
    accounts_b = {f"b{i}": 10**12 for i in range(50)}
    runs: list[ThroughputRun] = []
    profile: dict[str, Any] | None = None
    print(f"machine: {machine()}")
    with (
        tempfile.TemporaryDirectory(prefix="bench-transfers-") as scratch,
        ServerProcess(accounts_a, credit_fault_rate=0.0) as bank_a,
        ServerProcess(accounts_b, credit_fault_rate=0.3, fault_seed=1) as bank_b,
    ):
        folder = Path(scratch)
        for seed, side in enumerate(("batch", "api", "api", "batch"), start=1):
            planned = asyncio.run(plan(bank_a, bank_b, transfers, seed))
            if side == "batch":
                run = batch_run(bank_a, bank_b, transfers, seed, folder)
            else:
                run = api_run(bank_a, bank_b, planned, folder)
            runs.append(run)
            print(
                f"{run.side:5} {run.transfers} transfers in {run.seconds:6.2f} s: {run.completed_rate:6.1f} "
                f"completed/s, p50 {run.p50_ms:6.1f} ms, CPU ms/transfer: sagas "
                f"{run.cpu_ms_per_transfer(run.cpu_sagas):.2f}, client {run.cpu_ms_per_transfer(run.cpu_client):.2f}, "
                f"banks {run.cpu_ms_per_transfer(run.cpu_banks):.2f}; {run.states}",
                flush=True,
            )
        with TransfersProcess({SOURCE: bank_a.url, TARGET: bank_b.url}, db=folder / "latency.db") as service:
            debits, posts = asyncio.run(sample_latencies(bank_a, service.url, samples))

        def rate(side: str) -> float:
            chosen = [run for run in runs if run.side == side]
            return sum(run.completed for run in chosen) / sum(run.seconds for run in chosen)

        measured = {
            "api_vs_batch_completed_at_64": rate("api") / rate("batch"),
            "post_201_vs_debit_p50_at_1": quantile(posts, 0.5) / quantile(debits, 0.5),
        }
        met = {
            name: measured[name] <= target if name in AT_MOST else measured[name] >= target
            for name, target in TARGETS.items()
        }
        if args.profile or (not met["api_vs_batch_completed_at_64"] and not args.no_profile):
            raw = folder / "service-profile.txt"
            profiled = api_run(bank_a, bank_b, asyncio.run(plan(bank_a, bank_b, transfers // 2, 99)), folder, raw)
            samples_taken, shares = profile_shares(raw)
            profile = {
                "completed_rate_while_profiled": profiled.completed_rate,
                "samples": samples_taken,
                "shares": shares,
            }

    lines = [
        "",
        f"{'':40} {'completed/s':>12} {'p50 each':>9} {'CPU ms/transfer: sagas':>23} {'client':>7} {'banks':>7}",
    ]
    for side, label in (("batch", "saga batch, one process, c=64"), ("api", "transfers service API, 64 tasks")):
        chosen = [run for run in runs if run.side == side]
        total = sum(run.transfers for run in chosen)
        lines.append(
            f"{label:40} {rate(side):>12.1f} {quantile([run.p50_ms for run in chosen], 0.5):>7.1f}ms "
            f"{sum(run.cpu_sagas for run in chosen) * 1000 / total:>23.2f} "
            f"{sum(run.cpu_client for run in chosen) * 1000 / total:>7.2f} "
            f"{sum(run.cpu_banks for run in chosen) * 1000 / total:>7.2f}"
        )
    lines.append(
        f"p50 at concurrency 1: POST /transfers to 201 {quantile(posts, 0.5):.2f} ms "
        f"(p99 {quantile(posts, 0.99):.2f}), bare POST /debit {quantile(debits, 0.5):.2f} ms "
        f"(p99 {quantile(debits, 0.99):.2f}), {len(posts)} samples each"
    )
    for name, target in TARGETS.items():
        bound = "<=" if name in AT_MOST else ">="
        lines.append(f"{name:34} {measured[name]:8.3f}  target {bound} {target}: {'met' if met[name] else 'MISSED'}")
    if profile is not None:
        lines.append(
            f"py-spy profile of the transfers service, {profile['samples']} samples "
            f"(that run: {profile['completed_rate_while_profiled']:.1f} completed/s, not counted above):"
        )
        lines += [f"  {name:50} {share:6.1%}" for name, share in profile["shares"].items()]
    print("\n".join(lines))

    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": machine(),
        "quick": args.quick,
        "setup": {
            "accounts_services": "memory store; bank-a sources, bank-b targets with 30% credit faults (seed 1)",
            "saga_log": "a fresh SQLite file per run",
            "concurrency": CONCURRENCY,
            "transfers_per_run": transfers,
            "latency_samples": len(posts),
        },
        "runs": [asdict(run) | {"completed_rate": run.completed_rate} for run in runs],
        "completed_rate": {"batch": rate("batch"), "api": rate("api")},
        "p50_ms": {"post_transfers_201": quantile(posts, 0.5), "debit": quantile(debits, 0.5)},
        "p99_ms": {"post_transfers_201": quantile(posts, 0.99), "debit": quantile(debits, 0.99)},
        "ratios": measured,
        "targets": {name: {"target": TARGETS[name], "measured": measured[name], "met": met[name]} for name in TARGETS},
        "profile": profile,
    }
    (args.out / "bench_transfers.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"wrote {args.out / 'bench_transfers.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
