"""Recovery that accounts for every saga: those it resumed, those it could not take, and those that wait for a person.

:meth:`Orchestrator.recover` resumes what it can claim and says nothing of
the rest. An operator who runs ``python -m saga recover`` needs the rest
too: the sagas another process's lease still holds (a worker that died a
moment ago holds its sagas until its leases run out), and the sagas in
NEEDS_ATTENTION, which no automation resumes. A failure of the log while
resuming one saga is kept to that saga, so the others still finish and the
command still reports.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from saga.deadlines import iso_time
from saga.failures import LOG_FAILURES, what_failed
from saga.orchestrator import Orchestrator, wall_clock_ms
from saga.records import SagaRecord
from saga.run import TransferResult
from saga.states import SagaState

#: As many as one claim may take: every claimable saga.
_ALL = 1_000_000_000


@dataclass
class Recovery:
    results: list[TransferResult] = field(default_factory=list)
    #: transaction_id -> why resuming it failed (the log failed under it): it stays unfinished in the log.
    failed: dict[str, str] = field(default_factory=dict)
    #: Unfinished sagas another process's lease still held when this recovery claimed: not taken.
    held: list[SagaRecord] = field(default_factory=list)
    #: Every saga in the log that waits in NEEDS_ATTENTION, whenever it got there.
    needs_attention: list[SagaRecord] = field(default_factory=list)
    #: What stopped the recovery itself (the log could not be read), in one line; None if nothing did.
    failure: str | None = None
    #: When ``held`` was read, in milliseconds since the epoch.
    at_ms: int = 0

    @property
    def unfinished(self) -> list[TransferResult]:
        return [result for result in self.results if not result.state.is_terminal]

    def held_json(self) -> list[dict[str, Any]]:
        return [
            {
                "transaction_id": record.transaction_id,
                "state": record.state.value,
                "owner": record.owner,
                "lease_expires_at": iso_time(record.lease_expires_at_ms),
                "lease_expires_at_ms": record.lease_expires_at_ms,
            }
            for record in self.held
        ]

    def held_line(self, record: SagaRecord) -> str:
        seconds = max(0.0, (record.lease_expires_at_ms - self.at_ms) / 1000)
        return (
            f"HELD {record.transaction_id} {record.state}: by {record.owner} until "
            f"{iso_time(record.lease_expires_at_ms)} (in {seconds:.1f} s)"
        )

    def held_summary(self) -> str:
        last = max(record.lease_expires_at_ms for record in self.held)
        seconds = max(0.0, (last - self.at_ms) / 1000)
        return (
            f"{len(self.held)} unfinished sagas are held by another process's lease, the last until "
            f"{iso_time(last)} (in {seconds:.1f} s): a live worker drives them, or once the leases end "
            "any worker or the next recover takes them"
        )


async def recover(orchestrator: Orchestrator) -> Recovery:
    """Resume every saga the log lets this orchestrator claim, and say what it could not take or finish."""
    log = orchestrator.log
    recovery = Recovery()
    try:
        claimed = await orchestrator.claim(_ALL, include_waiting=True)
        recovery.at_ms = wall_clock_ms()
        # Read right after the claim: what is unfinished and not ours now is another's.
        taken = {record.transaction_id for record in claimed}
        recovery.held = [
            record
            for record in await log.unfinished()
            if record.transaction_id not in taken
            and record.owner is not None
            and record.owner != orchestrator.owner
            and record.lease_expires_at_ms > recovery.at_ms
        ]
    except LOG_FAILURES as error:
        recovery.failure = what_failed(error)
        return recovery

    async def resume(record: SagaRecord) -> TransferResult | None:
        try:
            return await orchestrator.drive(record)
        except LOG_FAILURES as error:
            recovery.failed[record.transaction_id] = what_failed(error)
            return None

    results = await asyncio.gather(*(resume(record) for record in claimed))
    recovery.results = [result for result in results if result is not None]
    try:
        recovery.needs_attention = await log.sagas(SagaState.NEEDS_ATTENTION)
    except LOG_FAILURES as error:
        recovery.failure = what_failed(error)
    if recovery.failed and recovery.failure is None:
        recovery.failure = next(iter(recovery.failed.values()))
    return recovery
