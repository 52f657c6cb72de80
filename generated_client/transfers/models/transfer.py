from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..models.transfer_state import TransferState

if TYPE_CHECKING:
    from ..models.transfer_account import TransferAccount


T = TypeVar("T", bound="Transfer")


@_attrs_define
class Transfer:
    """
    Attributes:
        transaction_id (str):
        idempotency_key (None | str): The key it was submitted under; null for a transfer started otherwise (the CLI's
            `transfer`).
        state (TransferState): `COMPLETED`, `COMPENSATED`, `FAILED`, `NEEDS_ATTENTION`, `CANCELLED`
            and `RESOLVED` are final: no automation moves a transfer out of them.
            `COMPLETED`: debited and credited. `COMPENSATED`: the debit was given
            back. `FAILED`: the debit was refused or never sent, so nothing
            moved. `NEEDS_ATTENTION`: an accounts service forgot the transfer; an
            operator decides, and only an operator's `resolve` leads on, to
            `RESOLVED`: settled by hand. `CANCELLED`: an operator cancelled it
            before any request was sent.
        source (TransferAccount):
        target (TransferAccount):
        amount (int): An amount of money in minor units (cents). The service writes it
            without a fraction; it reads `2500.0` as `2500`, and refuses any other
            fraction.
        created_at (datetime.datetime): ISO 8601, in UTC, to the millisecond.
        updated_at (datetime.datetime): ISO 8601, in UTC, to the millisecond.
        attempts (int): Requests sent to accounts services so far.
        last_error (None | str): Why the saga last retried, compensated, failed or stopped; null when nothing went
            wrong.
        submitted_by (None | str): The name of the API token it was submitted with; null without API tokens.
        deadline (datetime.datetime | None): After this time the saga sends no new forward request; null without a
            deadline.
        code (None | str): Why the transfer ended where it did, as a stable code; while it
            is `COMPENSATING`, why it compensates; null while it runs
            forward and when it completed. For example `insufficient_funds`
            (`FAILED`), `deadline_exceeded` (`FAILED` or `COMPENSATED`),
            `outcome_unknown` (`COMPENSATED`), `cancelled`, and the
            resolution (`moved_by_hand`, `nothing_to_move`) of a `RESOLVED`
            one.
    """

    transaction_id: str
    idempotency_key: None | str
    state: TransferState
    source: TransferAccount
    target: TransferAccount
    amount: int
    created_at: datetime.datetime
    updated_at: datetime.datetime
    attempts: int
    last_error: None | str
    submitted_by: None | str
    deadline: datetime.datetime | None
    code: None | str

    def to_dict(self) -> dict[str, Any]:
        transaction_id = self.transaction_id

        idempotency_key: None | str
        idempotency_key = self.idempotency_key

        state = self.state.value

        source = self.source.to_dict()

        target = self.target.to_dict()

        amount = self.amount

        created_at = self.created_at.isoformat()

        updated_at = self.updated_at.isoformat()

        attempts = self.attempts

        last_error: None | str
        last_error = self.last_error

        submitted_by: None | str
        submitted_by = self.submitted_by

        deadline: None | str
        if isinstance(self.deadline, datetime.datetime):
            deadline = self.deadline.isoformat()
        else:
            deadline = self.deadline

        code: None | str
        code = self.code

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "transaction_id": transaction_id,
                "idempotency_key": idempotency_key,
                "state": state,
                "source": source,
                "target": target,
                "amount": amount,
                "created_at": created_at,
                "updated_at": updated_at,
                "attempts": attempts,
                "last_error": last_error,
                "submitted_by": submitted_by,
                "deadline": deadline,
                "code": code,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.transfer_account import TransferAccount

        d = dict(src_dict)
        transaction_id = d.pop("transaction_id")

        def _parse_idempotency_key(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        idempotency_key = _parse_idempotency_key(d.pop("idempotency_key"))

        state = TransferState(d.pop("state"))

        source = TransferAccount.from_dict(d.pop("source"))

        target = TransferAccount.from_dict(d.pop("target"))

        amount = d.pop("amount")

        created_at = datetime.datetime.fromisoformat(d.pop("created_at"))

        updated_at = datetime.datetime.fromisoformat(d.pop("updated_at"))

        attempts = d.pop("attempts")

        def _parse_last_error(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        last_error = _parse_last_error(d.pop("last_error"))

        def _parse_submitted_by(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        submitted_by = _parse_submitted_by(d.pop("submitted_by"))

        def _parse_deadline(data: object) -> datetime.datetime | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                deadline_type_0 = datetime.datetime.fromisoformat(data)

                return deadline_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None, data)

        deadline = _parse_deadline(d.pop("deadline"))

        def _parse_code(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        code = _parse_code(d.pop("code"))

        transfer = cls(
            transaction_id=transaction_id,
            idempotency_key=idempotency_key,
            state=state,
            source=source,
            target=target,
            amount=amount,
            created_at=created_at,
            updated_at=updated_at,
            attempts=attempts,
            last_error=last_error,
            submitted_by=submitted_by,
            deadline=deadline,
            code=code,
        )

        return transfer
