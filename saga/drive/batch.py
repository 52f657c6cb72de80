"""Batches of random transfers, with a report that checks the money afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from saga import services, verify
from saga.clients import ServiceClients
from saga.failures import LOG_FAILURES, one_line, what_failed
from saga.ledgers import LedgerUntrusted, Quarantine, ServiceQuarantined
from saga.logs import SagaLog
from saga.orchestrator import Orchestrator
from saga.records import AccountRef, SagaRecord, as_urls, service_id
from saga.run import TransferResult
from saga.states import ENDS_IN_ORDER, SagaState

Progress = Callable[[int, int], None]

#: Seconds one audit-trail read may take: the audit's own, not the sagas' --request-timeout.
AUDIT_REQUEST_TIMEOUT = 10.0
#: Audit-trail reads in flight at once, and the connections of the audit's own pool.
AUDIT_READS = 8


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
    #: Transfers started whose end this run does not know: what failed (``failure``) cut them off.
    interrupted: int = 0
    #: Transfers of the plan never started, because a failure had already cut the run short.
    not_started: int = 0
    #: What cut the run short, in one line (the saga log failed, a service could not be read); None if nothing.
    failure: str | None = None
    #: Why the audit of the trails could not finish, in one line; None when it finished or was not asked for.
    audit_problem: str | None = None
    #: False when the balances could not be read after the run; ``after`` is then empty.
    balances_read: bool = True
    #: Transfers refused before anything was sent: a service they name is quarantined.
    refused: int = 0
    #: Every quarantined service after the run, with why (saga/ledgers.py).
    quarantined: list[Quarantine] = field(default_factory=list)

    @property
    def judged(self) -> bool:
        """Whether the invariants were checked: they need the balances after, and every saga's end."""
        return self.balances_read and not self.interrupted

    @property
    def unjudged_because(self) -> str | None:
        if not self.balances_read:
            return "the balances after the run could not be read"
        if self.interrupted:
            return f"{self.interrupted} transfers were cut off before their end"
        return None

    @property
    def audit(self) -> str:
        """``checked``, ``not checked`` (--no-audit) or ``incomplete`` (a trail could not be read)."""
        if self.audit_problem is not None:
            return "incomplete"
        return "checked" if self.audited else "not checked"

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
    def money_conserved(self) -> bool | None:
        """None when the balances after the run could not be read."""
        if not self.balances_read:
            return None
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
            "cancelled": self.states[SagaState.CANCELLED],
            "resolved": self.states[SagaState.RESOLVED],
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
            "total_after": verify.total(self.after) if self.balances_read else None,
            "money_conserved": self.money_conserved,
            "balances_before": self.before,
            "balances_after": self.after if self.balances_read else None,
            "audited": self.audited,
            "audit": self.audit,
            "audit_problem": self.audit_problem,
            "balances_compared": self.judged and not self.other_traffic,
            "other_traffic": list(self.other_traffic),
            "interrupted": self.interrupted,
            "not_started": self.not_started,
            "refused": self.refused,
            "quarantined": [{"service": q.service, "reason": q.reason} for q in self.quarantined],
            "failure": self.failure,
            "invariants_checked": self.judged,
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
        if self.interrupted:
            rows.append(("cut off, end unknown", str(self.interrupted)))
        if self.not_started:
            rows.append(("not started", str(self.not_started)))
        if self.refused:
            rows.append(("refused: service quarantined", str(self.refused)))
        if self.recovered:
            rows.append(("recovered from the log", str(len(self.recovered))))
        for url in self.before:
            after = str(sum(self.after.get(url, {}).values())) if self.balances_read else "not read"
            rows.append((f"total at {url}", f"{sum(self.before[url].values())} -> {after}"))
        total_after = str(verify.total(self.after)) if self.balances_read else "not read"
        rows += [
            ("total over all services", f"{verify.total(self.before)} -> {total_after}"),
            ("money conserved", self._conserved_text()),
            ("negative balances", str(_negatives(self.after)) if self.balances_read else "not read"),
            ("audit of every saga", self.audit + (f" ({self.audit_problem})" if self.audit_problem else "")),
            ("balances against the sagas", self._compared_text()),
            ("invariants", self._invariants_text()),
            ("latency p50 / p99", f"{self.latency(0.5) * 1000:.1f} ms / {self.latency(0.99) * 1000:.1f} ms"),
            ("throughput", f"{self.throughput:.1f} transfers/s over {self.seconds:.2f} s"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"  {name.ljust(width)}  {value}" for name, value in rows]
        if self.other_traffic:
            lines.append(f"  {verify.OTHER_TRAFFIC}: {', '.join(self.other_traffic)}")
        lines += [f"  ! {violation}" for violation in self.violations]
        lines += [f"  ! {quarantine}" for quarantine in self.quarantined]
        return "\n".join(lines)

    def _conserved_text(self) -> str:
        conserved = self.money_conserved
        if conserved is None:
            return "unknown: balances not read"
        if not conserved and self.interrupted:
            # Money of a transfer cut off between its debit and its credit is out of every total until recovery.
            return f"not now: {self.interrupted} transfers cut off"
        return "yes" if conserved else "NO"

    def _compared_text(self) -> str:
        if not self.judged:
            return "not compared"
        return "not compared: other traffic" if self.other_traffic else "compared"

    def _invariants_text(self) -> str:
        if not self.judged:
            return f"not checked: {self.unjudged_because}"
        return "all hold" if not self.violations else f"{len(self.violations)} BROKEN"


#: Every terminal state, in the order the report lists them; the others count as "still pending".
_SHOWN_STATES = ENDS_IN_ORDER


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
    sole_traffic: bool = True,
    shared: bool = False,
    concurrency: int | None = None,
    audit_timeout: float = AUDIT_REQUEST_TIMEOUT,
) -> BatchReport:
    """Run the transfers concurrently (the orchestrator bounds how many), then check the money.

    ``settle``, when given, is awaited after the last transfer and before the
    balances are read again: for example, until a restarted service answers.
    ``sole_traffic`` says no one else moves money on these services meanwhile;
    otherwise balances that others moved are reported as such (see
    :func:`saga.verify.judge_shared`) rather than as a broken invariant.
    ``shared`` (a log that workers share) submits every transfer first, then
    drives them with a :class:`~saga.worker.Worker` of ``concurrency`` (16)
    alongside any other workers, until every one of them has ended.
    ``concurrency`` otherwise gates how many transfers are started at once, so
    that none is started once a failure has cut the run short.

    A failure mid-run (the saga log, or a service whose balances cannot be
    read after it) never escapes: the report says what failed
    (``failure``), how many transfers it cut off and how many it kept from
    starting, and judges only what it can. An audit trail that cannot be read
    leaves the audit incomplete (``audit_problem``).
    """
    loop = asyncio.get_running_loop()
    if before is None:
        before = await services.snapshot(orchestrator.clients, service_urls, orchestrator.watch)

    started = loop.time()
    if shared:
        run_ = await _submit_and_drive(orchestrator, transfers, concurrency or 16, progress)
    else:
        run_ = await _transfer_each(orchestrator, transfers, concurrency, progress)
    results, failure = run_.results, run_.failure
    seconds = loop.time() - started
    if settle is not None:
        await settle()
    after: dict[str, dict[str, int]] = {}
    opened: dict[str, dict[str, int]] = {}
    balances_read = True
    try:
        after = await services.snapshot(orchestrator.clients, service_urls, orchestrator.watch)
        opened = services.opened_between(before, after)
        if not sole_traffic:
            after, opened = await _settled(orchestrator, service_urls, before, after, opened)
    except (services.ServiceUnavailable, LedgerUntrusted, *LOG_FAILURES) as error:
        balances_read = False
        after = {}
        failure = failure or f"the balances after the run could not be read: {_reason(error)}"
    codes = await _resolutions(orchestrator.log, results)
    ends = [
        verify.SagaEnd(r.transaction_id, r.state, r.source, r.target, r.amount, codes.get(r.transaction_id))
        for r in results
    ]
    trails, audit_problem = None, None
    if audit:
        trails, audit_problem = await audit_trails(orchestrator, ends, request_timeout=audit_timeout)
    report = BatchReport(
        results,
        before,
        after,
        seconds,
        [],
        audited=audit and audit_problem is None,
        interrupted=run_.interrupted,
        not_started=run_.not_started,
        failure=failure,
        audit_problem=audit_problem,
        balances_read=balances_read,
        refused=run_.refused,
    )
    try:
        report.quarantined = await orchestrator.log.quarantines()
    except LOG_FAILURES as error:
        report.failure = report.failure or what_failed(error)
    if not report.judged:
        return report
    if sole_traffic:
        report.violations = verify.check(before, after, ends, trails, opened=opened)
        return report
    judgement = verify.judge_shared(before, after, ends, trails, opened)
    report.violations, report.other_traffic = judgement.violations, judgement.other_traffic
    return report


@dataclass
class _Run:
    results: list[TransferResult]
    interrupted: int = 0
    not_started: int = 0
    #: The first failure that cut transfers off, in one line.
    failure: str | None = None
    refused: int = 0


async def _resolutions(log: SagaLog, results: Sequence[TransferResult]) -> dict[str, str]:
    """The resolution of each RESOLVED saga (moved_by_hand or nothing_to_move), as the log holds it.

    An operator may resolve a saga of a shared run before the run reads its
    end; the audit judges it by how it was settled. A log that fails this
    read leaves the resolutions unknown: the report still judges the rest.
    """
    codes: dict[str, str] = {}
    for result in results:
        if result.state is not SagaState.RESOLVED:
            continue
        try:
            record = await log.get(result.transaction_id)
        except LOG_FAILURES:
            break
        if record is not None and record.code is not None:
            codes[result.transaction_id] = record.code
    return codes


def _reason(error: BaseException) -> str:
    if isinstance(error, services.ServiceUnavailable | LedgerUntrusted):
        return str(error)
    return what_failed(error)


async def _transfer_each(
    orchestrator: Orchestrator,
    transfers: Sequence[PlannedTransfer],
    concurrency: int | None,
    progress: Progress | None,
) -> _Run:
    """Every transfer driven here; after the first failure, those not yet started are left alone."""
    gate: contextlib.AbstractAsyncContextManager[Any] = (
        asyncio.Semaphore(concurrency) if concurrency else contextlib.nullcontext()
    )
    outcome = _Run([])
    done = 0

    async def one(planned: PlannedTransfer) -> TransferResult | None:
        nonlocal done
        async with gate:
            if outcome.failure is not None:
                outcome.not_started += 1
                return None
            try:
                result = await orchestrator.transfer(planned.source, planned.target, planned.amount)
            except ServiceQuarantined:
                # Refused before anything was logged or sent; the report names the quarantine.
                outcome.refused += 1
                return None
            except LOG_FAILURES as error:
                # Its saga, if logged, is unfinished in the log for the next recovery.
                outcome.interrupted += 1
                if outcome.failure is None:
                    outcome.failure = what_failed(error)
                return None
        done += 1
        if progress is not None:
            progress(done, len(transfers))
        return result

    ended = await asyncio.gather(*(one(planned) for planned in transfers))
    outcome.results = [result for result in ended if result is not None]
    return outcome


async def _settled(
    orchestrator: Orchestrator,
    service_urls: Sequence[str | Iterable[str]],
    before: verify.Balances,
    after: services.Snapshot,
    opened: dict[str, dict[str, int]],
    *,
    patience: float = 3.0,
    interval: float = 0.1,
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Balances (and the accounts opened since ``before``) read again until their total is back, for a while.

    Another process's transfer between its debit and its credit holds money
    out of every total for a moment: a snapshot taken then is no evidence of
    lost money. Money really lost or minted stays so, and is reported after
    the wait. Money brought in by an account opened meanwhile is counted as such.
    """
    for _ in range(round(patience / interval)):
        if verify.total(after) == verify.total(before) + verify.brought_in(opened):
            break
        await asyncio.sleep(interval)
        after = await services.snapshot(orchestrator.clients, service_urls, orchestrator.watch)
        opened = services.opened_between(before, after)
    return after, opened


async def _submit_and_drive(
    orchestrator: Orchestrator, transfers: Sequence[PlannedTransfer], concurrency: int, progress: Progress | None
) -> _Run:
    from saga.submission import submit
    from saga.worker import Worker

    log = orchestrator.log
    outcome = _Run([])
    ids: list[str] = []
    for planned in transfers:
        try:
            ids.append(await submit(log, planned.source, planned.target, planned.amount))
        except LOG_FAILURES as error:
            # Whether this one was recorded is unknown; if it was, any worker drives it.
            outcome.failure = what_failed(error)
            break
    outcome.not_started = len(transfers) - len(ids)
    if outcome.failure is not None:
        # The log failed: what was submitted waits there for the workers.
        outcome.interrupted = len(ids)
        return outcome
    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(orchestrator, concurrency=concurrency).run(stop))
    ended: dict[str, SagaRecord] = {}
    try:
        while len(ended) < len(ids) and outcome.failure is None:
            if worker.done():
                await worker
            await asyncio.sleep(0.2)
            open_ids = [transaction_id for transaction_id in ids if transaction_id not in ended]
            states = await log.states(open_ids)
            newly = [transaction_id for transaction_id in open_ids if states.get(transaction_id, _OPEN).is_terminal]
            for record in await asyncio.gather(*(log.get(transaction_id) for transaction_id in newly)):
                if record is not None and record.state.is_terminal:
                    ended[record.transaction_id] = record
            if progress is not None:
                progress(len(ended), len(ids))
    except LOG_FAILURES as error:
        # The sagas not seen to end stay in the log, for the workers or the next recovery.
        outcome.failure = what_failed(error)
    finally:
        stop.set()
        try:
            await worker
        except LOG_FAILURES as error:
            outcome.failure = outcome.failure or what_failed(error)
    outcome.interrupted = len(ids) - len(ended)
    outcome.results = [await _result_from_log(log, ended[tid]) for tid in ids if tid in ended]
    return outcome


_OPEN = SagaState.PENDING


async def _result_from_log(log: SagaLog, record: SagaRecord) -> TransferResult:
    """How a saga ended, as the log tells it: whichever workers drove it.

    Its attempts are read from its history; if the log fails that read, the
    end stands without them.
    """
    try:
        history = await log.history(record.transaction_id)
    except LOG_FAILURES:
        history = []
    attempts = tuple(event.attempt for event in history if event.attempt is not None)
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


async def audit_trails(
    orchestrator: Orchestrator,
    sagas: Sequence[verify.SagaEnd],
    *,
    request_timeout: float = AUDIT_REQUEST_TIMEOUT,
    reads: int = AUDIT_READS,
) -> tuple[dict[tuple[str, str], list[verify.TrailItem]] | None, str | None]:
    """Every saga's audit trail at each service it touched, or None and why the audit could not finish.

    The reads have a pool of ``reads`` connections of their own and never
    more reads in flight than it holds: a read waiting for a pooled
    connection would count the wait against its connect timeout (aiohttp
    does), and fail on a service that is merely busy. Each read gets
    ``request_timeout``, whatever the sagas' own. The first read that fails
    stops the audit, so a service that is down costs one timeout, not one per
    trail.
    """
    to_read: dict[tuple[str, str], tuple[str, ...]] = {}
    for saga in sagas:
        for account in (saga.source, saga.target):
            to_read.setdefault((account.service_url, saga.transaction_id), account.urls)
    if not to_read:
        return {}, None
    slots = asyncio.Semaphore(reads)
    problem: str | None = None

    async def fetch(
        reader: ServiceClients, key: tuple[str, str], urls: tuple[str, ...]
    ) -> list[verify.TrailItem] | None:
        nonlocal problem
        async with slots:
            if problem is not None:
                return None
            try:
                return await services.trail(reader, urls, key[1])
            except Exception as error:
                if problem is None:
                    reason = str(error) if isinstance(error, services.ServiceUnavailable) else one_line(error)
                    problem = f"cannot read the trail of {key[1]} at {','.join(urls)}: {reason}"
                return None

    async with ServiceClients(token=orchestrator.clients.token, timeout=request_timeout, connections=reads) as reader:
        read = await asyncio.gather(*(fetch(reader, key, urls) for key, urls in to_read.items()))
    if problem is not None:
        return None, problem
    return {key: trail for key, trail in zip(to_read, read, strict=True) if trail is not None}, None
