"""A saga log in memory: every commit is immediate, and nothing survives the process.

It follows the same lease rules as the shared PostgreSQL log (see
:mod:`saga.logs.base`), on whatever clock its callers pass in: the simulator
runs several orchestrators on one of these, each with a clock of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from saga.ledgers import Acceptance, LedgerMark, Quarantine
from saga.logs.base import (
    LeaseLost,
    Overview,
    SagaLogError,
    UnknownSaga,
    apply_change,
    change_events,
    claim_event,
    copy_record,
    involves,
    key_conflict,
    overview_of,
    page_after,
    raised_mark,
    same_transfer,
    take_action,
)
from saga.records import Change, Event, OperatorAction, SagaRecord
from saga.states import TERMINAL_STATES, SagaState


class MemorySagaLog:
    """``exclusive``: the log belongs to one orchestrator (as a SQLite file does), or is shared under leases."""

    def __init__(self, *, exclusive: bool = False) -> None:
        self.exclusive = exclusive
        self._sagas: dict[str, SagaRecord] = {}
        self._history: dict[str, list[Event]] = {}
        self._by_key: dict[str, str] = {}
        self._listeners: list[Callable[[], None]] = []
        self._retry_listeners: list[Callable[[str], None]] = []
        self.commits = 0
        self._marks: dict[str, LedgerMark] = {}
        self._quarantines: dict[str, Quarantine] = {}
        self._acceptances: list[Acceptance] = []

    async def create(self, saga: SagaRecord, first_state: SagaState) -> None:
        self._insert(saga)
        await self.commit(
            Change(saga.transaction_id, saga.created_at_ms, state=first_state, epoch=saga.epoch, owner=saga.owner)
        )

    async def submit(self, saga: SagaRecord) -> tuple[SagaRecord, bool]:
        key = saga.idempotency_key
        if key is not None and key in self._by_key:
            first = self._sagas[self._by_key[key]]
            if not same_transfer(first, saga):
                raise key_conflict(key)
            return copy_record(first), False
        pending = copy_record(saga)
        pending.state, pending.owner, pending.epoch, pending.lease_expires_at_ms = SagaState.PENDING, None, 0, 0
        self._insert(pending)
        self._wake()
        return copy_record(pending), True

    def _insert(self, saga: SagaRecord) -> None:
        if saga.transaction_id in self._sagas:
            raise SagaLogError(f"saga {saga.transaction_id} already exists")
        self._sagas[saga.transaction_id] = copy_record(saga)
        self._history[saga.transaction_id] = [Event(saga.transaction_id, saga.created_at_ms, "state", state=saga.state)]
        if saga.idempotency_key is not None:
            self._by_key[saga.idempotency_key] = saga.transaction_id

    async def commit(self, change: Change) -> None:
        saga = self._sagas[change.transaction_id]
        if change.epoch is not None and saga.epoch != change.epoch:
            raise LeaseLost(change.transaction_id, change.epoch)
        apply_change(saga, change)
        self._history[change.transaction_id].extend(change_events(change))
        self.commits += 1

    async def commit_all(self, changes: Sequence[Change]) -> None:
        for change in changes:
            await self.commit(change)

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
        candidates = self._sagas.values() if transaction_id is None else [self._sagas[transaction_id]]
        claimed: list[SagaRecord] = []
        for saga in candidates:
            if len(claimed) >= limit:
                break
            waiting_for_none = include_waiting and saga.owner is None
            if saga.state in TERMINAL_STATES or (saga.lease_expires_at_ms > now_ms and not waiting_for_none):
                continue
            saga.owner, saga.epoch, saga.lease_expires_at_ms = owner, saga.epoch + 1, now_ms + lease_ms
            self._history[saga.transaction_id].append(claim_event(saga, now_ms))
            claimed.append(copy_record(saga))
        return claimed

    async def renew(self, owner: str, held: Mapping[str, int], *, lease_ms: int, now_ms: int) -> set[str]:
        lost = set()
        for transaction_id, epoch in held.items():
            saga = self._sagas[transaction_id]
            if saga.epoch == epoch:
                saga.lease_expires_at_ms = now_ms + lease_ms
            else:
                lost.add(transaction_id)
        return lost

    async def release(self, transaction_id: str, epoch: int, *, not_before_ms: int = 0) -> bool:
        saga = self._sagas[transaction_id]
        if saga.epoch != epoch:
            return False
        saga.owner, saga.lease_expires_at_ms = None, not_before_ms
        if saga.state not in TERMINAL_STATES and not not_before_ms:
            self._wake()
        return True

    async def listen(self, wake: Callable[[], None], retry: Callable[[str], None] | None = None) -> None:
        self._listeners.append(wake)
        if retry is not None:
            self._retry_listeners.append(retry)

    async def act(self, action: OperatorAction) -> SagaRecord:
        saga = self._sagas.get(action.transaction_id)
        if saga is None:
            raise UnknownSaga(f"no saga has the id {action.transaction_id!r}")
        event, effect = take_action(saga, action)
        self._history[saga.transaction_id].append(event)
        if effect.state is None and saga.owner is None:
            self._wake()
        if effect.state is None:
            for retry in self._retry_listeners:
                retry(saga.transaction_id)
        return copy_record(saga)

    async def overview(self, *, now_ms: int, stuck_after_ms: int, limit: int) -> Overview:
        return overview_of(self._sagas.values(), now_ms=now_ms, stuck_after_ms=stuck_after_ms, limit=limit)

    async def by_account(self, user_id: str, *, service: str | None = None, limit: int) -> list[SagaRecord]:
        chosen = [saga for saga in self._sagas.values() if involves(saga, user_id, service)]
        return [copy_record(saga) for saga in page_after(chosen, None, limit)]

    async def action_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for history in self._history.values():
            for event in history:
                if event.action is not None:
                    counts[event.action.kind.value] = counts.get(event.action.kind.value, 0) + 1
        return counts

    def _wake(self) -> None:
        for wake in self._listeners:
            wake()

    async def raise_ledger_marks(self, marks: Sequence[LedgerMark]) -> None:
        for mark in marks:
            self._marks[mark.service] = raised_mark(self._marks.get(mark.service), mark)

    async def ledger_marks(self) -> dict[str, LedgerMark]:
        return dict(self._marks)

    async def quarantine(self, quarantine: Quarantine) -> bool:
        if quarantine.service in self._quarantines:
            return False
        self._quarantines[quarantine.service] = quarantine
        return True

    async def quarantines(self) -> list[Quarantine]:
        return list(self._quarantines.values())

    async def accept(self, service: str, reason: str, at_ms: int) -> Acceptance | None:
        lifted = self._quarantines.pop(service, None)
        if lifted is None:
            return None
        generation = self._marks[service].generation + 1 if service in self._marks else 1
        self._marks[service] = LedgerMark(service, None, 0, generation)
        self._acceptances.append(Acceptance(service, reason, at_ms, lifted.reason))
        return self._acceptances[-1]

    async def acceptances(self) -> list[Acceptance]:
        return list(self._acceptances)

    async def get(self, transaction_id: str) -> SagaRecord | None:
        saga = self._sagas.get(transaction_id)
        return None if saga is None else copy_record(saga)

    async def sagas(self, state: SagaState | None = None) -> list[SagaRecord]:
        return [copy_record(saga) for saga in self._sagas.values() if state is None or saga.state == state]

    async def unfinished(self) -> list[SagaRecord]:
        return [copy_record(saga) for saga in self._sagas.values() if saga.state not in TERMINAL_STATES]

    async def history(self, transaction_id: str) -> list[Event]:
        return list(self._history.get(transaction_id, []))

    async def page(
        self, *, state: SagaState | None = None, limit: int, after: tuple[int, str] | None = None
    ) -> list[SagaRecord]:
        chosen = [saga for saga in self._sagas.values() if state is None or saga.state == state]
        return [copy_record(saga) for saga in page_after(chosen, after, limit)]

    async def states(self, transaction_ids: Sequence[str]) -> dict[str, SagaState]:
        return {tid: self._sagas[tid].state for tid in transaction_ids if tid in self._sagas}

    async def close(self) -> None:
        return None
