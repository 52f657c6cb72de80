"""``python -m saga reconcile``: the sagas that ended, held against what each service's ledger says of them.

The saga log and the ledgers are two records of one set of transfers. They
can only drift apart when one of them goes back in time (a restore from a
backup, a rolled-back snapshot, a lost WAL file), and then nothing else
notices: every service still answers, and every saga still says how it
ended. Reconciliation reads, for every saga that ended in a window, the
audit trail of its id at each of its services and judges it as a batch's
audit does (saga/verify.py), and reads each service's ledger position
against the highest the log has seen. It lists:

* ``lost``: a saga whose service has no entry at all under its id, where the
  saga's end says it must (a debit, and for a completed transfer a credit):
  the ledger forgot the transfer, and the money it moved;
* ``disagrees``: a trail that moved other amounts than the saga's end says;
* ``cancelled moved money``: a CANCELLED saga (an operator cancelled it before
  any run took it up, so nothing was ever sent) under whose id a service
  holds any entry at all;
* ``went back``: a ledger answering below the position the log has seen;
* ``quarantined`` services, and sagas waiting in NEEDS_ATTENTION.

Any of them exits 3, so that a scheduled run pages someone. Sagas an operator
RESOLVED are not judged against the trails (a service forgot them, and the
operator settled them by hand): they are listed as ``settled by hand``, with
the resolution, who and why from the action in their history, and do not
change the exit code. An operator who
has compared and settled a quarantined service's ledger lifts its
quarantine with ``--accept SERVICE --reason TEXT``: the decision is recorded
in the log with its reason, and the service's next answer sets its mark anew.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from generated_client.accounts.api.accounts import list_accounts
from generated_client.accounts.models import AccountList
from saga import verify
from saga.clients import ServiceClients
from saga.deadlines import iso_time
from saga.directory import ServiceDirectory
from saga.ledgers import LedgerMark, went_back
from saga.logs import SagaLog
from saga.records import AccountRef, ActionKind, SagaRecord
from saga.replicas import describe, first_reachable
from saga.services import trail
from saga.states import SagaState
from saga.steps import ledger_position

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_BAD_INPUT = 2
EXIT_FOUND = 3


@dataclass(frozen=True, slots=True)
class Finding:
    #: lost, disagrees, cancelled_moved_money, went_back, quarantined or needs_attention.
    kind: str
    detail: str
    transaction_id: str | None = None
    service: str | None = None

    def line(self) -> str:
        return f"{self.kind.replace('_', ' ')}: {self.detail}"


@dataclass(frozen=True, slots=True)
class SettledByHand:
    """A RESOLVED saga: listed, not judged, and no reason to page anyone by itself."""

    transaction_id: str
    amount: int
    source: str
    target: str
    #: moved_by_hand or nothing_to_move (SagaRecord.code).
    resolution: str | None
    #: Who resolved it, when (ISO 8601) and why, from the action in its history; None if the history has none.
    actor: str | None
    at: str | None
    reason: str | None

    def line(self) -> str:
        who = f" by {self.actor}" if self.actor else ""
        when = f" at {self.at}" if self.at else ""
        why = f": {self.reason}" if self.reason else ""
        return (
            f"settled by hand: {self.transaction_id} ({self.amount} from {self.source} to {self.target}): "
            f"{self.resolution or 'resolved'}{who}{when}{why}"
        )


@dataclass(frozen=True, slots=True)
class LedgerReading:
    service: str
    ledger_id: str | None
    position: int | None
    #: The log's mark for the service, as (ledger id, position), if it has one.
    marked: tuple[str | None, int] | None
    error: str | None = None


@dataclass
class Reconciliation:
    since_ms: int
    sagas: int = 0
    ledgers: list[LedgerReading] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    #: Why some of the window could not be judged: unreadable trails or positions.
    unread: list[str] = field(default_factory=list)
    #: RESOLVED sagas of the window: settled by an operator, not judged, not findings.
    settled_by_hand: list[SettledByHand] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.findings:
            return EXIT_FOUND
        return EXIT_INCOMPLETE if self.unread else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "since": iso_time(self.since_ms),
            "sagas": self.sagas,
            "ledgers": [asdict(reading) for reading in self.ledgers],
            "findings": [asdict(finding) for finding in self.findings],
            "settled_by_hand": [asdict(settled) for settled in self.settled_by_hand],
            "complete": not self.unread,
            "unread": self.unread,
        }


async def reconcile(
    log: SagaLog,
    directory: ServiceDirectory,
    *,
    token: str | None,
    since_ms: int,
    concurrency: int = 16,
    request_timeout: float = 5.0,
) -> Reconciliation:
    """Every disagreement between the log and the services since ``since_ms``; see the module's docstring."""
    outcome = Reconciliation(since_ms)
    for quarantine in await log.quarantines():
        outcome.findings.append(Finding("quarantined", str(quarantine), quarantine.transaction_id, quarantine.service))
    ended = [
        _resolved(record, directory)
        for record in await log.sagas()
        if record.state.is_terminal and record.updated_at_ms >= since_ms
    ]
    outcome.sagas = len(ended)
    services: dict[str, AccountRef] = {}
    for record in ended:
        for account in (record.source, record.target):
            services.setdefault(account.service_key, account)
    async with ServiceClients(token=token, timeout=request_timeout, connections=concurrency * 2) as reader:
        reads = _Reads(reader, request_timeout, asyncio.Semaphore(concurrency))
        marks = await log.ledger_marks()
        for reading in await asyncio.gather(
            *(reads.position(key, account, marks) for key, account in services.items())
        ):
            outcome.ledgers.append(reading)
            _judge_position(reading, marks.get(reading.service), outcome)
        judged = [record for record in ended if record.state is not SagaState.RESOLVED]
        trails = await asyncio.gather(*(reads.trails(record) for record in judged))
    for record in ended:
        if record.state is SagaState.RESOLVED:
            outcome.settled_by_hand.append(await settled_by_hand(log, record))
    for record, read in zip(judged, trails, strict=True):
        if isinstance(read, str):
            outcome.unread.append(f"{record.transaction_id}: {read}")
        else:
            outcome.findings += judge_saga(record, read)
    return outcome


def _resolved(record: SagaRecord, directory: ServiceDirectory) -> SagaRecord:
    record.source, record.target = directory.resolve(record.source), directory.resolve(record.target)
    return record


def _judge_position(reading: LedgerReading, mark: LedgerMark | None, outcome: Reconciliation) -> None:
    if reading.error is not None or reading.ledger_id is None or reading.position is None:
        outcome.unread.append(f"position of {reading.service}: {reading.error or 'its answer names no position'}")
        return
    why = went_back(mark, reading.ledger_id, reading.position)
    if why is not None:
        outcome.findings.append(Finding("went_back", f"{reading.service}: {why}", service=reading.service))


async def settled_by_hand(log: SagaLog, record: SagaRecord) -> SettledByHand:
    """The RESOLVED saga as reconcile lists it: how, by whom and why, from the last resolve in its history."""
    actions = [event.action for event in await log.history(record.transaction_id) if event.action is not None]
    resolve = next((action for action in reversed(actions) if action.kind is ActionKind.RESOLVE), None)
    resolution = record.code
    if resolution is None and resolve is not None and resolve.resolution is not None:
        resolution = resolve.resolution.value
    return SettledByHand(
        record.transaction_id,
        record.amount,
        str(record.source),
        str(record.target),
        resolution,
        None if resolve is None else resolve.actor,
        None if resolve is None else iso_time(resolve.at_ms),
        None if resolve is None else resolve.reason,
    )


def judge_saga(record: SagaRecord, trails: dict[str, list[verify.TrailItem]]) -> list[Finding]:
    tid = record.transaction_id
    if record.state is SagaState.NEEDS_ATTENTION:
        return [Finding("needs_attention", f"{tid}: {record.last_error}", tid)]
    if record.state is SagaState.RESOLVED:
        # Settled by hand: listed apart (see settled_by_hand), never a finding.
        return []
    end = verify.SagaEnd(tid, record.state, record.source, record.target, record.amount, record.code)
    keyed = {(service, tid): items for service, items in trails.items()}
    if record.state is SagaState.CANCELLED:
        # Nothing was ever sent: nothing can be lost, and any entry at all is a finding.
        return [
            Finding("cancelled_moved_money", violation.detail, tid) for violation in verify.check_trails([end], keyed)
        ]
    # Every saga that ended asked its source for a debit, and every completed
    # one its target for a credit: an answer the service gave, so recorded.
    must_know = [record.source] + ([record.target] if record.state is SagaState.COMPLETED else [])
    lost = [account for account in must_know if not trails[account.service_url]]
    if lost:
        return [
            Finding(
                "lost",
                f"{tid} ({record.state}, {record.amount} from {record.source} to {record.target}): "
                f"{account.service_key} has no entry under it: its ledger forgot the transfer",
                tid,
                account.service_key,
            )
            for account in lost
        ]
    return [Finding("disagrees", violation.detail, tid) for violation in verify.check_trails([end], keyed)]


class _Reads:
    """Reads of the services, as many at once as the pool allows, each within its own timeout."""

    def __init__(self, reader: ServiceClients, timeout: float, slots: asyncio.Semaphore) -> None:
        self._reader = reader
        self._timeout = timeout
        self._slots = slots

    async def position(self, key: str, account: AccountRef, marks: dict[str, LedgerMark]) -> LedgerReading:
        mark = marks.get(key)
        marked = None if mark is None else (mark.ledger_id, mark.position)
        try:
            response = await self._first_reachable(
                account,
                lambda url: list_accounts.asyncio_detailed(
                    client=self._reader.client_for(url), transaction_id=f"reconcile-{uuid.uuid4()}"
                ),
            )
        except Exception as error:
            return LedgerReading(key, None, None, marked, describe(error))
        if not isinstance(response.parsed, AccountList):
            return LedgerReading(key, None, None, marked, f"answered {int(response.status_code)}")
        return LedgerReading(
            key, response.headers.get("ledger-id"), ledger_position(response.headers), marked, error=None
        )

    async def trails(self, record: SagaRecord) -> dict[str, list[verify.TrailItem]] | str:
        """The trail under the saga's id at each of its services, by service; why not, if one cannot be read."""
        trails: dict[str, list[verify.TrailItem]] = {}
        for account in (record.source, record.target):
            if account.service_url in trails:
                continue
            try:
                async with self._slots, asyncio.timeout(self._timeout):
                    trails[account.service_url] = await trail(self._reader, account.urls, record.transaction_id)
            except Exception as error:
                return f"the trail at {account.service_key} cannot be read: {describe(error)}"
        return trails

    async def _first_reachable(self, account: AccountRef, call: Any) -> Any:
        async with self._slots, asyncio.timeout(self._timeout):
            return await first_reachable(account.urls, self._reader.replicas, call)
