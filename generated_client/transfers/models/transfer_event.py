from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..models.action_kind import ActionKind
from ..models.event_kind import EventKind
from ..models.resolution import Resolution
from ..models.transfer_event_step import TransferEventStep
from ..models.transfer_state import TransferState
from ..types import UNSET, Unset

T = TypeVar("T", bound="TransferEvent")


@_attrs_define
class TransferEvent:
    """
    Attributes:
        at (datetime.datetime): ISO 8601, in UTC, to the millisecond.
        kind (EventKind):
        worker (None | str): The worker that wrote the event; null for a write no lease guarded.
        epoch (int | None): The lease epoch the event was written under; null for a write no lease guarded.
        state (TransferState | Unset): `COMPLETED`, `COMPENSATED`, `FAILED`, `NEEDS_ATTENTION`, `CANCELLED`
            and `RESOLVED` are final: no automation moves a transfer out of them.
            `COMPLETED`: debited and credited. `COMPENSATED`: the debit was given
            back. `FAILED`: the debit was refused or never sent, so nothing
            moved. `NEEDS_ATTENTION`: an accounts service forgot the transfer; an
            operator decides, and only an operator's `resolve` leads on, to
            `RESOLVED`: settled by hand. `CANCELLED`: an operator cancelled it
            before any request was sent.
        because (str | Unset): Why the state changed, where the log says.
        step (TransferEventStep | Unset):
        attempt (int | Unset): The number of this request within its step.
        status (int | None | Unset): The HTTP status the accounts service answered; null when no answer came.
        code (None | str | Unset): The problem code of the answer, if it was a problem.
        error (None | str | Unset): What went wrong without an answer (a timeout, a refused connection).
        latency_us (int | Unset): Microseconds from sending the request to its answer or failure.
        service (None | str | Unset): The accounts service the request went to, by name.
        ledger_id (None | str | Unset): The Ledger-Id that answered; null without an answer.
        action (ActionKind | Unset):
        actor (str | Unset): Who took an `action`; the operator token's name, or `cli:USER@HOST`.
        reason (str | Unset): Why, as the operator gave it.
        resolution (Resolution | Unset): `moved_by_hand`: the money was moved (or given back) outside the
            saga. `nothing_to_move`: the services' trails show nothing left to
            move.
    """

    at: datetime.datetime
    kind: EventKind
    worker: None | str
    epoch: int | None
    state: TransferState | Unset = UNSET
    because: str | Unset = UNSET
    step: TransferEventStep | Unset = UNSET
    attempt: int | Unset = UNSET
    status: int | None | Unset = UNSET
    code: None | str | Unset = UNSET
    error: None | str | Unset = UNSET
    latency_us: int | Unset = UNSET
    service: None | str | Unset = UNSET
    ledger_id: None | str | Unset = UNSET
    action: ActionKind | Unset = UNSET
    actor: str | Unset = UNSET
    reason: str | Unset = UNSET
    resolution: Resolution | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        at = self.at.isoformat()

        kind = self.kind.value

        worker: None | str
        worker = self.worker

        epoch: int | None
        epoch = self.epoch

        state: str | Unset = UNSET
        if not isinstance(self.state, Unset):
            state = self.state.value

        because = self.because

        step: str | Unset = UNSET
        if not isinstance(self.step, Unset):
            step = self.step.value

        attempt = self.attempt

        status: int | None | Unset
        if isinstance(self.status, Unset):
            status = UNSET
        else:
            status = self.status

        code: None | str | Unset
        if isinstance(self.code, Unset):
            code = UNSET
        else:
            code = self.code

        error: None | str | Unset
        if isinstance(self.error, Unset):
            error = UNSET
        else:
            error = self.error

        latency_us = self.latency_us

        service: None | str | Unset
        if isinstance(self.service, Unset):
            service = UNSET
        else:
            service = self.service

        ledger_id: None | str | Unset
        if isinstance(self.ledger_id, Unset):
            ledger_id = UNSET
        else:
            ledger_id = self.ledger_id

        action: str | Unset = UNSET
        if not isinstance(self.action, Unset):
            action = self.action.value

        actor = self.actor

        reason = self.reason

        resolution: str | Unset = UNSET
        if not isinstance(self.resolution, Unset):
            resolution = self.resolution.value

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "at": at,
                "kind": kind,
                "worker": worker,
                "epoch": epoch,
            }
        )
        if state is not UNSET:
            field_dict["state"] = state
        if because is not UNSET:
            field_dict["because"] = because
        if step is not UNSET:
            field_dict["step"] = step
        if attempt is not UNSET:
            field_dict["attempt"] = attempt
        if status is not UNSET:
            field_dict["status"] = status
        if code is not UNSET:
            field_dict["code"] = code
        if error is not UNSET:
            field_dict["error"] = error
        if latency_us is not UNSET:
            field_dict["latency_us"] = latency_us
        if service is not UNSET:
            field_dict["service"] = service
        if ledger_id is not UNSET:
            field_dict["ledger_id"] = ledger_id
        if action is not UNSET:
            field_dict["action"] = action
        if actor is not UNSET:
            field_dict["actor"] = actor
        if reason is not UNSET:
            field_dict["reason"] = reason
        if resolution is not UNSET:
            field_dict["resolution"] = resolution

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        at = datetime.datetime.fromisoformat(d.pop("at"))

        kind = EventKind(d.pop("kind"))

        def _parse_worker(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        worker = _parse_worker(d.pop("worker"))

        def _parse_epoch(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        epoch = _parse_epoch(d.pop("epoch"))

        _state = d.pop("state", UNSET)
        state: TransferState | Unset
        if isinstance(_state, Unset):
            state = UNSET
        else:
            state = TransferState(_state)

        because = d.pop("because", UNSET)

        _step = d.pop("step", UNSET)
        step: TransferEventStep | Unset
        if isinstance(_step, Unset):
            step = UNSET
        else:
            step = TransferEventStep(_step)

        attempt = d.pop("attempt", UNSET)

        def _parse_status(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        status = _parse_status(d.pop("status", UNSET))

        def _parse_code(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        code = _parse_code(d.pop("code", UNSET))

        def _parse_error(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        error = _parse_error(d.pop("error", UNSET))

        latency_us = d.pop("latency_us", UNSET)

        def _parse_service(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        service = _parse_service(d.pop("service", UNSET))

        def _parse_ledger_id(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        ledger_id = _parse_ledger_id(d.pop("ledger_id", UNSET))

        _action = d.pop("action", UNSET)
        action: ActionKind | Unset
        if isinstance(_action, Unset):
            action = UNSET
        else:
            action = ActionKind(_action)

        actor = d.pop("actor", UNSET)

        reason = d.pop("reason", UNSET)

        _resolution = d.pop("resolution", UNSET)
        resolution: Resolution | Unset
        if isinstance(_resolution, Unset):
            resolution = UNSET
        else:
            resolution = Resolution(_resolution)

        transfer_event = cls(
            at=at,
            kind=kind,
            worker=worker,
            epoch=epoch,
            state=state,
            because=because,
            step=step,
            attempt=attempt,
            status=status,
            code=code,
            error=error,
            latency_us=latency_us,
            service=service,
            ledger_id=ledger_id,
            action=action,
            actor=actor,
            reason=reason,
            resolution=resolution,
        )

        return transfer_event
