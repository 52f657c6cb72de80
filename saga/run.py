"""The machinery around one saga: retries, the write-ahead log, and its result."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from generated_client.accounts.api.accounts import get_transaction
from generated_client.accounts.models import TransactionTrail
from saga.commit_policy import commit_policy_for
from saga.ledger_watch import LedgerWatch
from saga.ledgers import LedgerMark, LedgerUntrusted
from saga.logs import SagaLog
from saga.records import AccountRef, Attempt, Change, SagaRecord
from saga.replicas import Replicas, first_reachable
from saga.retry import RetryPolicies, RetryPolicy
from saga.states import SagaState
from saga.steps import (
    COMPENSATE_CREDIT,
    COMPENSATE_DEBIT,
    CREDIT,
    DEBIT,
    ENDS_COMPENSATION,
    RECORDED_REJECTIONS,
    AnyClient,
    StepAnswer,
    Verdict,
    ledger_position,
    send,
    timing_clock,
)
from saga.waits import Backoff, NoWaits, RequestOut, WaitObserver

logger = logging.getLogger("saga")


class CompensationBlocked(Exception):
    """A compensation cannot finish now; the saga stays in COMPENSATING for the next recovery."""


class LedgerChanged(LedgerUntrusted):
    """A service answered from another ledger than before in this saga: it forgot what it did under the id.

    Nothing it answers about this saga can be trusted any more, so the saga
    stops driving it and waits for an operator (NEEDS_ATTENTION).
    """

    def __init__(self, transaction_id: str, service: str, before: str, now: str) -> None:
        super().__init__(
            service,
            f"the ledger of the service at {service} changed within saga {transaction_id}, from {before} to {now}: "
            "the service has forgotten what it did under this transaction_id; compare its balances and audit "
            "trail with this saga's history before moving any money by hand",
        )


@dataclass(frozen=True, slots=True)
class StepResult:
    """How one step ended, over all its attempts: with its last answer, or cut short by the saga's deadline."""

    #: The last attempt's answer; None when the deadline passed before the
    #: next attempt could go out (:attr:`expired`).
    answer: StepAnswer | None
    #: Whether this step may have been sent before, without our learning what
    #: became of it: by an earlier attempt that got no answer, or by an earlier
    #: run of the saga that ended in a crash or lost its lease.
    sent_before: bool

    @property
    def applied(self) -> bool:
        return self.answer is not None and self.answer.verdict is Verdict.OK

    @property
    def refused(self) -> bool:
        """Certainly not applied, now or later."""
        if self.answer is None or self.answer.verdict is not Verdict.REJECTED:
            return False
        # A rejection the service recorded holds for the transaction id, so it
        # covers every earlier attempt; one it did not record (401, 422, ...)
        # says nothing about an attempt that may still be in flight.
        return self.answer.code in RECORDED_REJECTIONS or not self.sent_before

    @property
    def expired(self) -> bool:
        """The saga's deadline passed before the step settled: it sent no more attempts."""
        return self.answer is None

    @property
    def never_sent(self) -> bool:
        """The deadline passed before any attempt of the step could have gone out, in this run or an earlier one."""
        return self.expired and not self.sent_before

    @property
    def code(self) -> str | None:
        return None if self.answer is None else self.answer.code

    @property
    def refusal_code(self) -> str:
        """The code a refusal came with, as a saga's end records it: ``refused`` for a bare 4xx that named none."""
        return self.code or "refused"


@dataclass(frozen=True, slots=True)
class TransferResult:
    transaction_id: str
    state: SagaState
    source: AccountRef
    target: AccountRef
    amount: int
    attempts: tuple[Attempt, ...]
    error: str | None = None
    #: From the transfer's start (its creation in the log, for a new saga) to its result.
    seconds: float = 0.0
    #: Microseconds of :attr:`seconds` spent waiting for the saga log's commits.
    log_wait_us: int = 0

    @property
    def retries(self) -> int:
        """Requests beyond the first of each step."""
        return sum(1 for attempt in self.attempts if attempt.number > 1)

    @property
    def compensated(self) -> bool:
        return any(attempt.step in (COMPENSATE_DEBIT, COMPENSATE_CREDIT) for attempt in self.attempts)


class SagaRun:
    """One saga in flight.

    Before each request it commits what a recovery would need should it die
    with that request in flight; the rest rides with a later commit. Which is
    which depends on the log, and is decided in one table:
    :class:`~saga.commit_policy.CommitPolicy`, chosen once from the log by
    :func:`~saga.commit_policy.commit_policy_for`.

    From the saga's deadline on (``record.deadline_ms``, read on ``now_ms``)
    no debit or credit request goes out: the deadline is checked right
    before each one, after any backoff, and a step it stops ends
    :attr:`StepResult.expired`. Compensations always go out, but past the
    deadline one without an answer is not retried in this run: it blocks, and
    the saga waits in the log for a recovery, a worker or an operator. ``nudge``, when
    set (an operator asked for a retry), cuts the backoff before the next
    attempt short. ``waits`` is told of every request as it goes out and
    comes back, and of every backoff (saga/waits.py).
    """

    def __init__(
        self,
        record: SagaRecord,
        log: SagaLog,
        clients: Callable[[str], AnyClient],
        policies: RetryPolicies,
        rng: random.Random,
        now_ms: Callable[[], int],
        replicas: Replicas | None = None,
        watch: LedgerWatch | None = None,
        *,
        nudge: asyncio.Event | None = None,
        waits: WaitObserver | None = None,
    ) -> None:
        self.record = record
        self._log = log
        self._watch = watch or LedgerWatch(log, now_ms)
        self._clients = clients
        self._replicas = replicas or Replicas()
        self._policies = policies
        self._rng = rng
        self._now_ms = now_ms
        #: Set to cut the backoff before the next attempt short (an operator's retry); cleared by the pause.
        self._nudge = nudge if nudge is not None else asyncio.Event()
        self._waits = waits or NoWaits()
        self._unlogged: list[Attempt] = []
        #: States entered but not yet committed, as the commit policy lets them ride.
        self._deferred: list[Change] = []
        self._commit_policy = commit_policy_for(log)
        #: Services whose ledger this run has made durable in the log.
        self._ledgers_logged: set[str] = set()
        self.attempts: list[Attempt] = []
        #: Microseconds this run has waited for the saga log's commits, in all.
        self.log_wait_us = 0
        #: The ledger each service answered from, by service: set by the first
        #: answer, and checked against every later one. None for a saga with
        #: attempts in the log until its first answer, when it learns its
        #: earlier ledgers from there.
        self._ledgers: dict[str, str] | None = {} if record.attempts == 0 else None

    @property
    def state(self) -> SagaState:
        return self.record.state

    @property
    def fence_credit(self) -> bool:
        return self.record.fence_credit

    @property
    def code(self) -> str | None:
        """The stable code logged with the saga's last decision: while COMPENSATING, why it compensates."""
        return self.record.code

    @property
    def resumed(self) -> bool:
        """Whether an earlier run drove this saga.

        Epoch 1 is a saga's first run, and every later run claimed it, which
        raised its epoch.
        """
        return self.record.epoch > 1

    @property
    def credit_may_be_unlogged(self) -> bool:
        """Whether an earlier run of this saga may have sent its credit although the log does not say so.

        After any crash on an exclusive log, whose forward state changes ride
        with later commits; and after any resumption on every log, since a
        log restored from a backup lacks whatever came after the backup.
        """
        return self.resumed

    async def enter(
        self,
        state: SagaState,
        *,
        fence_credit: bool | None = None,
        because: str | None = None,
        code: str | None = None,
    ) -> None:
        """Log the saga's new state, with why (a line, and a stable code) where it matters.

        The code logged with COMPENSATING is why the saga compensates: a run
        that resumes it reads it back (:attr:`code`) for the saga's end.
        """
        if state in self._commit_policy.states_that_ride and fence_credit is None and because is None:
            self._defer(state)
        else:
            await self._commit(state=state, fence_credit=fence_credit, error=because, code=code)
        self.record.state = state
        if fence_credit is not None:
            self.record.fence_credit = fence_credit
        if code is not None:
            self.record.code = code

    async def finish(self, state: SagaState, *, because: str | None = None, code: str | None = None) -> SagaState:
        assert state.is_terminal
        await self.enter(state, because=because, code=code)
        return state

    async def step(self, step: str) -> StepResult:
        """Run a forward step under its retry policy."""
        policy = self._policies.debit if step == DEBIT else self._policies.credit
        return await self._attempt_until_settled(step, policy)

    async def compensate(self, step: str) -> StepResult:
        """Run a compensation until the service gives a final answer.

        Raises CompensationBlocked when the answer does not end this
        compensation (see ENDS_COMPENSATION), or when the compensation
        policy's attempts run out.
        """
        result = await self._attempt_until_settled(step, self._policies.compensation)
        # No deadline stops a compensation's first attempt: it always has an answer, if only an unknown one.
        assert result.answer is not None
        acceptable = result.applied or (
            result.answer.verdict is Verdict.REJECTED and result.code in ENDS_COMPENSATION[step]
        )
        if not acceptable:
            await self._commit(error=f"{step} blocked: {_describe(result.answer.attempt)}")
            raise CompensationBlocked(f"{step} of {self.record.transaction_id}: {_describe(result.answer.attempt)}")
        return result

    async def _attempt_until_settled(self, step: str, policy: RetryPolicy) -> StepResult:
        account = self._account_of(step)
        attempts_before = len(self.attempts)
        number = 0
        while True:
            number += 1
            answer = await self._send_to_a_replica(step, account, number, policy)
            if answer is None:
                # Whatever this step sent before stays unknown: the workflow decides (saga/workflow.py),
                # and the state it enters says why.
                return StepResult(None, sent_before=len(self.attempts) > attempts_before or self.resumed)
            # Only an attempt without an answer is retried, so every attempt
            # before this one ended without an answer.
            settled = answer.verdict is not Verdict.UNKNOWN or not policy.allows(number + 1)
            # Past the deadline this run retries no compensation: it blocks, as when its
            # attempts run out, and waits in the log for a recovery, a worker or an
            # operator's retry. So no one waits on a saga beyond its deadline.
            if settled or (step not in (DEBIT, CREDIT) and self._deadline_passed()):
                return StepResult(answer, sent_before=number > 1 or self.resumed)
            logger.info(
                "%s %s: %s on attempt %d, retrying",
                step,
                self.record.transaction_id,
                _describe(answer.attempt),
                number,
                extra={"fields": {"transaction_id": self.record.transaction_id, "step": step, "attempt": number}},
            )
            delay = policy.delay_before(number + 1, self._rng)
            self._waits.backing_off(Backoff(self.record.transaction_id, answer.attempt, policy.maximum_attempts, delay))
            await self._pause(delay)

    async def _pause(self, delay: float) -> None:
        """Wait out a backoff of ``delay`` seconds, or until the nudge is set, whichever comes first."""
        if not delay:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._nudge.wait()
        self._nudge.clear()

    async def _send_to_a_replica(
        self, step: str, account: AccountRef, number: int, policy: RetryPolicy
    ) -> StepAnswer | None:
        """One attempt: the request, sent to the service's URLs in turn while they cannot be connected to.

        The replicas choose the URL afresh for every attempt, a retry's
        too, so the attempts of many sagas spread over the service's
        replicas. Each request is logged as a line of this attempt, with its
        URL. A URL that could not be connected to never got the request, so
        moving on to the next one at once is not a retry and adds no
        uncertainty.

        A debit or credit goes out only before the saga's deadline, checked
        right before each request: None when the deadline stopped the attempt.
        Compensations always go out.
        """
        assert account.urls, "a service has at least one URL"
        tried: list[str] = []
        while (url := self._replicas.choose(account.urls, tried)) is not None:
            tried.append(url)
            waited_from = self.log_wait_us
            await self._flush(step)
            log_wait_us = self.log_wait_us - waited_from
            await self._refuse_quarantined()
            mark = await self._watch.mark(account.service_key)
            if step in (DEBIT, CREDIT) and self._deadline_passed():
                return None
            request = RequestOut(
                self.record.transaction_id, step, number, policy.maximum_attempts, url, policy.request_timeout
            )
            self._waits.sending(request)
            answer = await send(
                self._clients(url),
                step,
                self.record.transaction_id,
                account.user_id,
                self.record.amount,
                number=number,
                request_timeout=policy.request_timeout,
                url=url,
                sent_at_ms=self._now_ms(),
                log_wait_us=log_wait_us,
            )
            self._waits.answered(request)
            self._unlogged.append(answer.attempt)
            self.attempts.append(answer.attempt)
            if answer.attempt.ledger_id is not None:
                await self._check_same_ledger(account, answer.attempt.ledger_id)
            await self._observe(account, answer.attempt.ledger_id, answer.ledger_position, mark)
            if not answer.unreachable:
                self._replicas.reached(url)
                return answer
            self._replicas.unreachable(url)
        # Every URL refused the connection: the last one's answer stands for the attempt.
        return answer

    def _deadline_passed(self) -> bool:
        """Whether the saga's deadline has come, on this run's clock."""
        deadline_ms = self.record.deadline_ms
        return deadline_ms is not None and self._now_ms() >= deadline_ms

    async def _refuse_quarantined(self) -> None:
        record = self.record
        await self._watch.refuse_quarantined(
            record.source.service_key, record.target.service_key, transaction_id=record.transaction_id
        )

    async def compensated_before(self) -> bool | None:
        """Whether either service recorded a compensation under this saga's id; None if a trail cannot be read.

        A run that compensates commits COMPENSATING first, so a log that says
        otherwise has gone back in time (restored from a backup): the
        services, not the log, know what became of the saga.
        """
        await self._refuse_quarantined()
        for account in self._services():
            operations = await self._trail_operations(account)
            if operations is None:
                return None
            if operations & {COMPENSATE_DEBIT, COMPENSATE_CREDIT}:
                return True
        return False

    async def nothing_on_record(self) -> bool:
        """Whether the services certainly hold nothing under this saga's id; False if a trail cannot be read.

        A log restored from a backup taken before a run claimed the saga
        forgets that run, and the debit it may have sent: the saga's epoch
        then says no run came before this one, and only the services know.
        """
        await self._refuse_quarantined()
        for account in self._services():
            if await self._trail_operations(account) != set():
                return False
        return True

    def _services(self) -> list[AccountRef]:
        """The source, and the target where it is on another service: one account per service to read a trail from."""
        accounts = [self.record.source]
        if not self.record.target.same_service(self.record.source):
            accounts.append(self.record.target)
        return accounts

    async def _trail_operations(self, account: AccountRef) -> set[str] | None:
        """The operations the service recorded under this saga's id, read as a step is retried; None if unreadable."""
        policy = self._policies.debit
        number = 0
        while True:
            number += 1
            await self._pause(policy.delay_before(number, self._rng))
            operations = await self._read_trail(account, policy.request_timeout)
            if operations is not None or not policy.allows(number + 1):
                return operations

    async def _read_trail(self, account: AccountRef, within: float) -> set[str] | None:
        mark = await self._watch.mark(account.service_key)
        try:
            async with asyncio.timeout(within):
                response = await first_reachable(
                    account.urls,
                    self._replicas,
                    lambda url: get_transaction.asyncio_detailed(
                        self.record.transaction_id,
                        client=self._clients(url),
                        transaction_id_header=self.record.transaction_id,
                    ),
                )
        except Exception:
            # Unreadable now, for whatever reason: the caller retries, then gives up to the safe side.
            return None
        if not isinstance(response.parsed, TransactionTrail):
            return None
        await self._observe(account, response.headers.get("ledger-id"), ledger_position(response.headers), mark)
        return {entry.operation.value for entry in response.parsed.entries}

    async def _observe(
        self, account: AccountRef, ledger_id: str | None, position: int | None, mark: LedgerMark | None
    ) -> None:
        """Raise the service's ledger mark with an answer, if it named its ledger and position (LedgerWentBack)."""
        if ledger_id is not None and position is not None:
            await self._watch.observe(account.service_key, ledger_id, position, mark, self.record.transaction_id)

    async def _check_same_ledger(self, account: AccountRef, ledger_id: str) -> None:
        if self._ledgers is None:
            self._ledgers = {}
            for event in await self._log.history(self.record.transaction_id):
                earlier = event.attempt
                if earlier is not None and earlier.ledger_id is not None:
                    self._ledgers.setdefault(self._account_of(earlier.step).service_url, earlier.ledger_id)
        known = self._ledgers.setdefault(account.service_url, ledger_id)
        if known != ledger_id:
            await self._watch.quarantine(
                account.service_key,
                f"its ledger changed within saga {self.record.transaction_id}, from {known} to {ledger_id}",
                self.record.transaction_id,
            )
            raise LedgerChanged(self.record.transaction_id, account.service_url, known, ledger_id)

    def _account_of(self, step: str) -> AccountRef:
        return self.record.target if step in (CREDIT, COMPENSATE_CREDIT) else self.record.source

    async def _flush(self, step: str) -> None:
        """Commit what the request of ``step`` depends on (see saga/commit_policy.py)."""
        if step in self._commit_policy.steps_sent_uncommitted and not self._new_ledger_unlogged():
            return
        if self._unlogged or self._deferred:
            await self._commit()

    def _new_ledger_unlogged(self) -> bool:
        """Whether an answer from a service's ledger this saga has not logged yet is still unlogged.

        A recovery compares every answer with the ledgers logged before it
        (LedgerChanged): so the first answer from each service is durable
        before the next request, on every log.
        """
        unlogged = [*self._unlogged, *(attempt for change in self._deferred for attempt in change.attempts)]
        return any(
            attempt.ledger_id is not None and self._account_of(attempt.step).service_url not in self._ledgers_logged
            for attempt in unlogged
        )

    def _defer(self, state: SagaState) -> None:
        """Enter a state the commit policy lets ride: it is committed with the next commit."""
        attempts, self._unlogged = self._unlogged, []
        record = self.record
        self._deferred.append(
            Change(record.transaction_id, self._now_ms(), state, None, attempts, None, record.epoch, record.owner)
        )

    async def _commit(
        self,
        *,
        state: SagaState | None = None,
        fence_credit: bool | None = None,
        error: str | None = None,
        code: str | None = None,
    ) -> None:
        attempts, self._unlogged = self._unlogged, []
        record = self.record
        # Conditional on the epoch this run claimed: after a takeover it raises
        # LeaseLost, and this run sends nothing more.
        change = Change(
            record.transaction_id,
            self._now_ms(),
            state,
            fence_credit,
            attempts,
            error,
            record.epoch,
            record.owner,
            code,
        )
        changes, self._deferred = [*self._deferred, change], []
        clock = timing_clock()
        started = clock()
        try:
            await self._log.commit_all(changes)
        except BaseException:
            # Not durable, or not known to be: kept to commit again, in order.
            *self._deferred, _ = changes
            self._unlogged = attempts + self._unlogged
            raise
        finally:
            self.log_wait_us += int((clock() - started) * 1_000_000)
        self._ledgers_logged.update(
            self._account_of(attempt.step).service_url
            for change in changes
            for attempt in change.attempts
            if attempt.ledger_id is not None
        )
        if error is not None:
            self.record.last_error = error


def _describe(attempt: Attempt) -> str:
    if attempt.status is None:
        return attempt.error or "no answer"
    if attempt.code:
        return f"{attempt.status} {attempt.code}"
    return str(attempt.status)
