"""What every saga log offers, and the lease rules they all follow.

A saga log is the write-ahead record of every saga. A log that several
orchestrator processes share (PostgreSQL) hands each saga to one of them at a
time with a **lease**: an owner, an epoch and an expiry. The same rules hold
in every log, so that one contract test suite and the simulator check them:

- :meth:`SagaLog.claim` takes sagas that are unfinished and whose lease has
  expired (or was released), and raises each one's epoch by one. A takeover
  is a claim, so it always raises the epoch.
- :meth:`SagaLog.commit` of a change that carries an epoch lands only while
  the saga is still at that epoch; otherwise it raises :class:`LeaseLost` and
  writes nothing. The driver then stops: it sends nothing more for the saga.
- :meth:`SagaLog.renew` extends the leases still held at their epochs, and
  says which are not; :meth:`SagaLog.release` hands a saga back at once.

Leases only decide *when* another orchestrator may take a saga over; the
epoch check on every commit is what makes a stale decision impossible, so a
clock that is wrong costs time, never money.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from saga.ledgers import Acceptance, LedgerMark, Quarantine
from saga.operator import ActionRefused, Effect, already_taken, decide
from saga.records import AccountRef, ActionKind, Attempt, Change, Event, OperatorAction, Resolution, SagaRecord
from saga.states import TERMINAL_STATES, SagaState


class SagaLogError(Exception):
    """The saga log cannot be opened or read."""


class LeaseLost(Exception):
    """The saga is no longer this orchestrator's: another one claimed it since. Stop driving it."""

    def __init__(self, transaction_id: str, epoch: int | None) -> None:
        super().__init__(f"saga {transaction_id} is no longer held at epoch {epoch}: another orchestrator took it over")
        self.transaction_id = transaction_id
        self.epoch = epoch


class IdempotencyKeyConflict(SagaLogError):
    """A submission reused an idempotency key for a different transfer."""


class UnknownSaga(SagaLogError):
    """No saga in the log has this transaction_id."""


#: The window of "completed lately" in an overview.
RECENT_MS: Final = 5 * 60 * 1000


@dataclass(frozen=True, slots=True)
class Overview:
    """What an operator looks at first, read in one go (see :meth:`SagaLog.overview`)."""

    counts: Mapping[SagaState, int]
    #: Sagas that ended COMPLETED within RECENT_MS before the overview's time.
    completed_recently: int
    #: Oldest first (by creation): COMPENSATING for longer than the threshold,
    #: NEEDS_ATTENTION, and unfinished past their deadline; at most the limit asked for.
    stuck: Sequence[SagaRecord]
    #: The counts behind the stuck list, whatever its limit.
    compensating_too_long: int = 0
    needs_attention: int = 0
    deadlines_expired: int = 0
    #: Creation time of the oldest NEEDS_ATTENTION saga; None when there is none.
    oldest_needs_attention_ms: int | None = None
    #: When the overview was read (ms since the epoch): ages are measured from it.
    at_ms: int = 0


class SagaLog(Protocol):
    @property
    def exclusive(self) -> bool:
        """Whether one process holds the log for as long as it runs, so that no other can take a saga over.

        On such a log forward states and attempts ride with later commits; on
        a shared one everything is committed, epoch-checked, before the next
        request (see saga/commit_policy.py).
        """

    async def create(self, saga: SagaRecord, first_state: SagaState) -> None:
        """Record a new saga and its first state in one commit, with the lease the record carries."""

    async def submit(self, saga: SagaRecord) -> tuple[SagaRecord, bool]:
        """Record a new PENDING saga that no one holds, for a worker to claim.

        With an idempotency key already in the log, records nothing and
        returns the saga first submitted under it; the bool says whether this
        call created the saga.
        """

    async def commit(self, change: Change) -> None:
        """Make a change durable; returns once it is. Raises LeaseLost when the change's epoch is stale."""

    async def commit_all(self, changes: Sequence[Change]) -> None:
        """Make several changes of one saga durable together, in order, as :meth:`commit` does one."""

    async def claim(
        self,
        owner: str,
        *,
        limit: int,
        lease_ms: int,
        now_ms: int,
        transaction_id: str | None = None,
        include_waiting: bool = False,
    ) -> list[SagaRecord]:
        """Lease up to ``limit`` unfinished sagas whose lease has expired by ``now_ms``, raising each epoch by one.

        ``transaction_id`` claims that one saga only, if it is claimable.
        ``include_waiting`` also claims sagas no one holds that wait for a
        later time (released with ``not_before_ms``): a recovery that an
        operator starts tries them now.
        """

    async def renew(self, owner: str, held: Mapping[str, int], *, lease_ms: int, now_ms: int) -> set[str]:
        """Extend the leases in ``held`` (transaction_id -> epoch); returns the ids no longer held at that epoch."""

    async def release(self, transaction_id: str, epoch: int, *, not_before_ms: int = 0) -> bool:
        """Hand the saga back (still at ``epoch``); False if it was no longer held.

        Anyone may claim it from ``not_before_ms`` on (at once by default): a
        blocked compensation waits that long before it is tried again, unless
        an operator retries it (:meth:`act`) or a recovery claims it with
        ``include_waiting``.
        """

    async def listen(self, wake: Callable[[], None], retry: Callable[[str], None] | None = None) -> None:
        """Call ``wake`` whenever a saga becomes claimable without waiting for a lease to expire.

        ``retry`` is called with a saga's id when an operator asks for it to be
        tried again at once (:meth:`act`), in whatever process that happened:
        whoever drives it cuts its wait short.
        """

    async def act(self, action: OperatorAction) -> SagaRecord:
        """Record an operator's action on a saga and apply its effect (see saga/operator.py) in one write.

        The rule is read and the change written atomically, so that it cannot
        race a claim or a driver's commit. Returns the saga as it is after the
        action. Raises UnknownSaga, or ActionRefused (nothing recorded). The
        action stays in the saga's history for good: no statement of any log
        updates or deletes an event.
        """

    async def overview(self, *, now_ms: int, stuck_after_ms: int, limit: int) -> Overview:
        """Counts by state, COMPLETED within RECENT_MS, and up to ``limit`` stuck sagas (see Overview)."""

    async def by_account(self, user_id: str, *, service: str | None = None, limit: int) -> list[SagaRecord]:
        """Up to ``limit`` sagas with ``user_id`` at either end (at the named service, if given), newest first."""

    async def action_counts(self) -> dict[str, int]:
        """How many operator actions of each kind the log holds."""

    async def raise_ledger_marks(self, marks: Sequence[LedgerMark]) -> None:
        """Keep, per service, the highest position seen from its ledger in its current generation.

        A mark of an older generation (from before an accepted decision), or
        from another ledger than the one marked, changes nothing: telling
        those apart is for whoever saw the answer (see saga/ledgers.py).
        """

    async def ledger_marks(self) -> dict[str, LedgerMark]:
        """Every service's mark, by service."""

    async def quarantine(self, quarantine: Quarantine) -> bool:
        """Quarantine a service; False if it already was (the first reason stands)."""

    async def quarantines(self) -> list[Quarantine]:
        """The services quarantined now, oldest first."""

    async def accept(self, service: str, reason: str, at_ms: int) -> Acceptance | None:
        """Lift the service's quarantine as an operator decided, and start a new generation of its mark.

        None when the service was not quarantined: nothing is recorded.
        """

    async def acceptances(self) -> list[Acceptance]:
        """Every recorded decision to lift a quarantine, oldest first."""

    async def get(self, transaction_id: str) -> SagaRecord | None: ...

    async def sagas(self, state: SagaState | None = None) -> list[SagaRecord]: ...

    async def unfinished(self) -> list[SagaRecord]: ...

    async def history(self, transaction_id: str) -> list[Event]: ...

    async def page(
        self, *, state: SagaState | None = None, limit: int, after: tuple[int, str] | None = None
    ) -> list[SagaRecord]:
        """Up to ``limit`` sagas, newest first (by creation time, then id), optionally in one state.

        ``after`` is the (created_at_ms, transaction_id) of the last saga of
        the previous page: the page starts with the saga just older than it.
        """

    async def states(self, transaction_ids: Sequence[str]) -> dict[str, SagaState]:
        """The current state of each of ``transaction_ids`` the log holds, in one read."""

    async def close(self) -> None: ...


def apply_change(saga: SagaRecord, change: Change) -> None:
    if change.state is not None:
        saga.state = change.state
    if change.fence_credit is not None:
        saga.fence_credit = change.fence_credit
    saga.attempts += len(change.attempts)
    if change.error is not None:
        saga.last_error = change.error
    saga.updated_at_ms = change.at_ms
    if change.code is not None or (change.state is not None and change.state.is_terminal):
        # A terminal state says why itself: a COMPENSATING saga whose credit stood ends COMPLETED, code and all.
        saga.code = change.code
    if saga.state in TERMINAL_STATES:
        # Nothing is left to drive: the lease ends with the saga.
        saga.owner, saga.lease_expires_at_ms = None, 0


def change_events(change: Change) -> list[Event]:
    tid, at_ms, owner, epoch = change.transaction_id, change.at_ms, change.owner, change.epoch
    events = []
    for attempt in change.attempts:
        sent = sent_at(change, attempt)
        events.append(Event(tid, sent, "attempt", attempt=replace(attempt, sent_at_ms=sent), owner=owner, epoch=epoch))
    if change.state is not None:
        events.append(Event(tid, at_ms, "state", state=change.state, detail=change.error, owner=owner, epoch=epoch))
    return events


def sent_at(change: Change, attempt: Attempt) -> int:
    """The time an attempt's event carries: when its request went out, else (no clock said) the commit's time."""
    return change.at_ms if attempt.sent_at_ms is None else attempt.sent_at_ms


def copy_record(saga: SagaRecord) -> SagaRecord:
    return SagaRecord(
        saga.transaction_id,
        saga.source,
        saga.target,
        saga.amount,
        saga.state,
        saga.fence_credit,
        saga.created_at_ms,
        saga.updated_at_ms,
        saga.attempts,
        saga.last_error,
        saga.owner,
        saga.epoch,
        saga.lease_expires_at_ms,
        saga.idempotency_key,
        saga.submitted_by,
        saga.deadline_ms,
        saga.code,
    )


def same_transfer(first: SagaRecord, second: SagaRecord) -> bool:
    """Whether two submissions ask for one transfer: named services compare by name, so new URLs change nothing."""
    return (first.source.identity, first.target.identity, first.amount, first.submitted_by) == (
        second.source.identity,
        second.target.identity,
        second.amount,
        second.submitted_by,
    )


def raised_mark(current: LedgerMark | None, mark: LedgerMark) -> LedgerMark:
    """``current`` after :meth:`SagaLog.raise_ledger_marks` of ``mark``, as the SQL logs' upsert does it."""
    if current is None:
        return mark
    if current.generation != mark.generation or (current.ledger_id not in (None, mark.ledger_id)):
        return current
    if current.ledger_id is None:
        return LedgerMark(current.service, mark.ledger_id, mark.position, current.generation)
    return LedgerMark(current.service, current.ledger_id, max(current.position, mark.position), current.generation)


async def act_once(log: SagaLog, action: OperatorAction) -> tuple[SagaRecord, bool]:
    """Record ``action`` on the log: the saga as it is after it, and whether the action had been taken already.

    An action asked again after a lost answer (a cancel of a CANCELLED saga,
    the same resolution of a RESOLVED one) records nothing and is no conflict.
    Raises UnknownSaga, or ActionRefused when the action does not apply.
    """
    try:
        return await log.act(action), False
    except ActionRefused:
        current = await log.get(action.transaction_id)
        if current is None or not already_taken(current, action):
            raise
        return current, True


def take_action(saga: SagaRecord, action: OperatorAction) -> tuple[Event, Effect]:
    """Apply ``action`` to ``saga`` (as read for the write that records it): the event to append, and the effect.

    ActionRefused, with ``saga`` untouched, when the action does not apply.
    A retry of a saga no one holds makes it claimable at once.
    """
    effect = decide(saga, action)
    event = action_event(saga, action, effect)
    apply_change(saga, action_change(saga, action, effect))
    if effect.state is None and saga.owner is None:
        # Waiting after a blocked compensation: claimable from now on.
        saga.lease_expires_at_ms = 0
    return event, effect


def action_change(saga: SagaRecord, action: OperatorAction, effect: Effect) -> Change:
    """The change an action makes to the saga's row; its event is :func:`action_event`."""
    return Change(action.transaction_id, action.at_ms, effect.state, error=effect.error, code=effect.code)


def action_event(saga: SagaRecord, action: OperatorAction, effect: Effect) -> Event:
    """The one event an action adds to the saga's history: who, when, what and why, and the state it led to."""
    return Event(
        action.transaction_id,
        action.at_ms,
        "action",
        state=effect.state,
        detail=action.reason,
        owner=action.actor,
        epoch=saga.epoch,
        action=action,
    )


def is_stuck(saga: SagaRecord, now_ms: int, stuck_after_ms: int) -> bool:
    """Whether an overview lists the saga as stuck (see Overview.stuck)."""
    if saga.state is SagaState.NEEDS_ATTENTION:
        return True
    if saga.state is SagaState.COMPENSATING and saga.created_at_ms <= now_ms - stuck_after_ms:
        return True
    return past_deadline(saga, now_ms)


def past_deadline(saga: SagaRecord, now_ms: int) -> bool:
    return saga.deadline_ms is not None and saga.deadline_ms <= now_ms and not saga.state.is_terminal


def overview_of(sagas: Iterable[SagaRecord], *, now_ms: int, stuck_after_ms: int, limit: int) -> Overview:
    """The overview of ``sagas``, as every log's query computes it."""
    counts = dict.fromkeys(SagaState, 0)
    completed_recently = compensating_too_long = needs_attention = deadlines_expired = 0
    oldest_needs_attention_ms: int | None = None
    stuck: list[SagaRecord] = []
    for saga in sagas:
        counts[saga.state] += 1
        if saga.state is SagaState.COMPLETED and saga.updated_at_ms > now_ms - RECENT_MS:
            completed_recently += 1
        if saga.state is SagaState.NEEDS_ATTENTION:
            needs_attention += 1
            if oldest_needs_attention_ms is None or saga.created_at_ms < oldest_needs_attention_ms:
                oldest_needs_attention_ms = saga.created_at_ms
        if saga.state is SagaState.COMPENSATING and saga.created_at_ms <= now_ms - stuck_after_ms:
            compensating_too_long += 1
        if past_deadline(saga, now_ms):
            deadlines_expired += 1
        if is_stuck(saga, now_ms, stuck_after_ms):
            stuck.append(saga)
    stuck.sort(key=lambda saga: (saga.created_at_ms, saga.transaction_id))
    return Overview(
        counts,
        completed_recently,
        [copy_record(saga) for saga in stuck[:limit]],
        compensating_too_long,
        needs_attention,
        deadlines_expired,
        oldest_needs_attention_ms,
        now_ms,
    )


def involves(saga: SagaRecord, user_id: str, service: str | None) -> bool:
    """Whether ``user_id`` (at the service named ``service``, if given) is either end of the saga."""
    return any(
        account.user_id == user_id and (service is None or account.service == service)
        for account in (saga.source, saga.target)
    )


def key_conflict(key: str) -> IdempotencyKeyConflict:
    return IdempotencyKeyConflict(f"the idempotency key {key!r} was already used for another transfer")


def page_after(sagas: Sequence[SagaRecord], after: tuple[int, str] | None, limit: int) -> list[SagaRecord]:
    """Newest first: up to ``limit`` of ``sagas`` that sort before ``after`` (created_at_ms, transaction_id)."""
    ordered = sorted(sagas, key=newest_first_key, reverse=True)
    if after is not None:
        ordered = [saga for saga in ordered if newest_first_key(saga) < after]
    return ordered[:limit]


def newest_first_key(saga: SagaRecord) -> tuple[int, str]:
    """The order of a listing, descending: creation time, then id, so that equal times still sort one way."""
    return saga.created_at_ms, saga.transaction_id


def claim_event(saga: SagaRecord, at_ms: int) -> Event:
    return Event(saga.transaction_id, at_ms, "claim", owner=saga.owner, epoch=saga.epoch)


def describe_account(account: AccountRef) -> tuple[str, str]:
    """An account as the SQL logs store it: the service's URLs comma-separated, and the user."""
    return ",".join(account.urls), account.user_id


TERMINAL_VALUES = tuple(sorted(state.value for state in TERMINAL_STATES))

EVENT_COLUMNS = "at_ms, kind, state, step, attempt, status, code, latency_us, detail, url, owner, epoch, ledger_id"


class NamedRow(Protocol):
    """A row whose columns are read by name: a sqlite3.Row, an asyncpg.Record."""

    def __getitem__(self, name: str, /) -> Any: ...


def saga_from_row(row: NamedRow) -> SagaRecord:
    """One saga from the columns both SQL logs select, read by name."""
    return SagaRecord(
        transaction_id=row["transaction_id"],
        source=AccountRef(row["source_urls"], row["source_user"], row["source_service"]),
        target=AccountRef(row["target_urls"], row["target_user"], row["target_service"]),
        amount=row["amount"],
        state=SagaState(row["state"]),
        # SQLite keeps a boolean as the integer 0 or 1.
        fence_credit=bool(row["fence_credit"]),
        created_at_ms=row["created_at_ms"],
        updated_at_ms=row["updated_at_ms"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        owner=row["owner"],
        epoch=row["epoch"],
        lease_expires_at_ms=row["lease_expires_at_ms"],
        idempotency_key=row["idempotency_key"],
        submitted_by=row["submitted_by"],
        deadline_ms=row["deadline_ms"],
        code=row["code"],
    )


def event_from_row(transaction_id: str, row: Sequence[Any]) -> Event:
    """One event from the columns EVENT_COLUMNS names, in both SQL logs."""
    at_ms, kind, state, step, number, status, code, latency_us, detail, url, owner, epoch, ledger_id = row
    attempt = action = None
    if kind == "attempt":
        attempt = Attempt(step, number, status, code, latency_us, detail, url, ledger_id, at_ms)
        detail = None
    elif kind == "action":
        resolution = Resolution(code) if code else None
        action = OperatorAction(transaction_id, ActionKind(step), owner, detail, at_ms, resolution)
    return Event(
        transaction_id,
        at_ms,
        kind,
        SagaState(state) if state else None,
        attempt,
        detail,
        owner=owner,
        epoch=epoch,
        action=action,
    )


def action_row(event: Event) -> tuple[str, str | None]:
    """The (step, code) columns an action event is stored in: the action's kind, and the resolution."""
    assert event.action is not None
    resolution = event.action.resolution
    return event.action.kind.value, None if resolution is None else resolution.value
