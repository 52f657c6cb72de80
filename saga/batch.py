"""Batches of random transfers, with a report that checks the money afterwards."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from saga import services, verify
from saga.logs import SagaLog
from saga.orchestrator import Orchestrator
from saga.records import AccountRef, SagaRecord, as_urls, service_id
from saga.run import TransferResult
from saga.states import SagaState

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Workload:
    transfers: int
    min_amount: int = 1
    max_amount: int = 1_000
    seed: int | None = None
    #: user_ids the sources and targets are drawn from; None means every account.
    sources: Sequence[str] | None = None
    targets: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.transfers < 0:
            raise ValueError("transfers must not be negative")
        if not 1 <= self.min_amount <= self.max_amount:
            raise ValueError("amounts must satisfy 1 <= min_amount <= max_amount")


@dataclass(frozen=True, slots=True)
class PlannedTransfer:
    source: AccountRef
    target: AccountRef
    amount: int


def plan(
    workload: Workload,
    source_service: str | Iterable[str],
    target_service: str | Iterable[str],
    balances: verify.Balances,
) -> list[PlannedTransfer]:
    """Draw the workload's transfers among the services' accounts, reproducibly for a given seed.

    Each service is its URL or its URLs; ``balances`` is keyed by service identity, as snapshots are.
    """
    rng = random.Random(workload.seed)
    source_urls, target_urls = as_urls(source_service), as_urls(target_service)
    source_id, target_id = service_id(source_urls), service_id(target_urls)
    sources = sorted(workload.sources or balances[source_id])
    targets = sorted(workload.targets or balances[target_id])
    for role, users, service in (("source", sources, source_id), ("target", targets, target_id)):
        missing = [user for user in users if user not in balances[service]]
        if missing:
            raise ValueError(f"unknown {role} accounts at {service}: {', '.join(missing)}")
    pairs = [
        (AccountRef(source_urls, source), AccountRef(target_urls, target))
        for source in sources
        for target in targets
        if (source_id, source) != (target_id, target)
    ]
    if not pairs:
        raise ValueError("a batch needs two distinct accounts")
    return [
        PlannedTransfer(*rng.choice(pairs), rng.randint(workload.min_amount, workload.max_amount))
        for _ in range(workload.transfers)
    ]


@dataclass
class BatchReport:
    results: list[TransferResult]
    before: dict[str, dict[str, int]]
    after: dict[str, dict[str, int]]
    seconds: float
    violations: list[verify.Violation]
    recovered: list[TransferResult] = field(default_factory=list)
    audited: bool = False
    #: Accounts whose balances others moved meanwhile (``user@service``): not compared with the sagas.
    other_traffic: tuple[str, ...] = ()

    @property
    def states(self) -> Counter[SagaState]:
        return Counter(result.state for result in self.results)

    @property
    def pending(self) -> int:
        return sum(1 for result in self.results if not result.state.is_terminal)

    @property
    def retries(self) -> int:
        return sum(result.retries for result in self.results)

    @property
    def compensations(self) -> int:
        return sum(1 for result in self.results if result.compensated)

    @property
    def requests(self) -> int:
        return sum(len(result.attempts) for result in self.results)

    @property
    def money_conserved(self) -> bool:
        return verify.total(self.before) == verify.total(self.after)

    def latency(self, quantile: float) -> float:
        latencies = sorted(result.seconds for result in self.results)
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(quantile * len(latencies)))]

    @property
    def throughput(self) -> float:
        return len(self.results) / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "transfers": len(self.results),
            "completed": self.states[SagaState.COMPLETED],
            "compensated": self.states[SagaState.COMPENSATED],
            "failed": self.states[SagaState.FAILED],
            "needs_attention": self.states[SagaState.NEEDS_ATTENTION],
            "pending": self.pending,
            "retries": self.retries,
            "compensations": self.compensations,
            "requests": self.requests,
            "recovered": len(self.recovered),
            "seconds": round(self.seconds, 3),
            "transfers_per_second": round(self.throughput, 1),
            "latency_p50_ms": round(self.latency(0.50) * 1000, 1),
            "latency_p99_ms": round(self.latency(0.99) * 1000, 1),
            "total_before": verify.total(self.before),
            "total_after": verify.total(self.after),
            "money_conserved": self.money_conserved,
            "balances_before": self.before,
            "balances_after": self.after,
            "audited": self.audited,
            "balances_compared": not self.other_traffic,
            "other_traffic": list(self.other_traffic),
            "violations": [str(violation) for violation in self.violations],
        }

    def render(self) -> str:
        rows = [
            ("transfers", str(len(self.results))),
            *((state.value.lower(), str(self.states[state])) for state in _SHOWN_STATES),
            ("still pending", str(self.pending)),
            ("retries", str(self.retries)),
            ("compensations", str(self.compensations)),
            ("requests sent", str(self.requests)),
        ]
        if self.recovered:
            rows.append(("recovered from the log", str(len(self.recovered))))
        for url in self.before:
            rows.append(
                (f"total at {url}", f"{sum(self.before[url].values())} -> {sum(self.after.get(url, {}).values())}")
            )
        rows += [
            ("total over all services", f"{verify.total(self.before)} -> {verify.total(self.after)}"),
            ("money conserved", "yes" if self.money_conserved else "NO"),
            ("negative balances", str(_negatives(self.after))),
            ("audit of every saga", "checked" if self.audited else "not checked"),
            ("balances against the sagas", "not compared: other traffic" if self.other_traffic else "compared"),
            ("invariants", "all hold" if not self.violations else f"{len(self.violations)} BROKEN"),
            ("latency p50 / p99", f"{self.latency(0.5) * 1000:.1f} ms / {self.latency(0.99) * 1000:.1f} ms"),
            ("throughput", f"{self.throughput:.1f} transfers/s over {self.seconds:.2f} s"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"  {name.ljust(width)}  {value}" for name, value in rows]
        if self.other_traffic:
            lines.append(f"  {verify.OTHER_TRAFFIC}: {', '.join(self.other_traffic)}")
        lines += [f"  ! {violation}" for violation in self.violations]
        return "\n".join(lines)


_SHOWN_STATES = (SagaState.COMPLETED, SagaState.COMPENSATED, SagaState.FAILED, SagaState.NEEDS_ATTENTION)


def _negatives(balances: verify.Balances) -> int:
    return sum(1 for accounts in balances.values() for balance in accounts.values() if balance < 0)


async def run(
    orchestrator: Orchestrator,
    transfers: Sequence[PlannedTransfer],
    service_urls: Sequence[str | Iterable[str]],
    *,
    progress: Progress | None = None,
    audit: bool = True,
    before: dict[str, dict[str, int]] | None = None,
    settle: Callable[[], Awaitable[None]] | None = None,
    exclusive: bool = True,
    shared: bool = False,
    concurrency: int = 16,
) -> BatchReport:
    """Run the transfers concurrently (the orchestrator bounds how many), then check the money.

    ``settle``, when given, is awaited after the last transfer and before the
    balances are read again: for example, until a restarted service answers.
    ``exclusive`` says no one else moves money on these services meanwhile;
    otherwise balances that others moved are reported as such (see
    :func:`saga.verify.judge_shared`) rather than as a broken invariant.
    ``shared`` (a log that workers share) submits every transfer first, then
    drives them with a :class:`~saga.worker.Worker` of ``concurrency``
    alongside any other workers, until every one of them has ended.
    """
    loop = asyncio.get_running_loop()
    if before is None:
        before = await services.snapshot(orchestrator, service_urls)
    done = 0

    async def one(planned: PlannedTransfer) -> TransferResult:
        nonlocal done
        result = await orchestrator.transfer(planned.source, planned.target, planned.amount)
        done += 1
        if progress is not None:
            progress(done, len(transfers))
        return result

    started = loop.time()
    if shared:
        results = await _submit_and_drive(orchestrator, transfers, concurrency, progress)
    else:
        results = list(await asyncio.gather(*(one(planned) for planned in transfers)))
    seconds = loop.time() - started
    if settle is not None:
        await settle()
    after = await services.snapshot(orchestrator, service_urls)
    if not exclusive:
        after = await _settled(orchestrator, service_urls, verify.total(before), after)
    ends = [verify.SagaEnd(r.transaction_id, r.state, r.source, r.target, r.amount) for r in results]
    trails = await services.trails(orchestrator, ends) if audit else None
    if exclusive:
        return BatchReport(results, before, after, seconds, verify.check(before, after, ends, trails), audited=audit)
    judgement = verify.judge_shared(before, after, ends, trails)
    return BatchReport(
        results, before, after, seconds, judgement.violations, audited=audit, other_traffic=judgement.other_traffic
    )


async def _settled(
    orchestrator: Orchestrator,
    service_urls: Sequence[str | Iterable[str]],
    total_before: int,
    after: dict[str, dict[str, int]],
    *,
    patience: float = 3.0,
    interval: float = 0.1,
) -> dict[str, dict[str, int]]:
    """Balances read again until their total is back to ``total_before``, for at most ``patience`` seconds.

    Another process's transfer between its debit and its credit holds money
    out of every total for a moment: a snapshot taken then is no evidence of
    lost money. Money really lost or minted stays so, and is reported after
    the wait.
    """
    for _ in range(round(patience / interval)):
        if verify.total(after) == total_before:
            break
        await asyncio.sleep(interval)
        after = await services.snapshot(orchestrator, service_urls)
    return after


async def _submit_and_drive(
    orchestrator: Orchestrator, transfers: Sequence[PlannedTransfer], concurrency: int, progress: Progress | None
) -> list[TransferResult]:
    from saga.submission import submit
    from saga.worker import Worker

    log = orchestrator.log
    ids = [await submit(log, planned.source, planned.target, planned.amount) for planned in transfers]
    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(orchestrator, concurrency=concurrency).run(stop))
    ended: dict[str, SagaRecord] = {}
    try:
        while len(ended) < len(ids):
            if worker.done():
                await worker
            await asyncio.sleep(0.2)
            open_ids = [transaction_id for transaction_id in ids if transaction_id not in ended]
            for record in await asyncio.gather(*(log.get(transaction_id) for transaction_id in open_ids)):
                if record is not None and record.state.is_terminal:
                    ended[record.transaction_id] = record
            if progress is not None:
                progress(len(ended), len(ids))
    finally:
        stop.set()
        await worker
    return [await _result_from_log(log, ended[transaction_id]) for transaction_id in ids]


async def _result_from_log(log: SagaLog, record: SagaRecord) -> TransferResult:
    """How a saga ended, as the log tells it: whichever workers drove it."""
    attempts = tuple(event.attempt for event in await log.history(record.transaction_id) if event.attempt is not None)
    return TransferResult(
        record.transaction_id,
        record.state,
        record.source,
        record.target,
        record.amount,
        attempts,
        record.last_error,
        (record.updated_at_ms - record.created_at_ms) / 1000,
    )
