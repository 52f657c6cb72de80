from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define

from ..models.error_code import ErrorCode
from ..models.operation import Operation
from ..models.outcome import Outcome
from ..models.trail_entry_status import TrailEntryStatus
from ..types import UNSET, Unset

T = TypeVar("T", bound="TrailEntry")


@_attrs_define
class TrailEntry:
    """
    Attributes:
        operation (Operation):
        user_id (str):
        amount (int): An amount of money in minor units (cents). The service writes it
            without a fraction. It reads `2500.0` as `2500`, since JSON Schema
            counts a number with a zero fraction as an integer, and refuses any
            other fraction.
        status (TrailEntryStatus): The HTTP status this operation answered, and answers on replay.
        outcome (Outcome | Unset): `applied` for a debit or credit; `reversed` when a compensation undid an
            applied operation; `voided` when a compensation found nothing to undo and
            fenced the transaction id against a late arrival.
        balance (int | Unset): A balance in minor units (cents).
        code (ErrorCode | Unset):
    """

    operation: Operation
    user_id: str
    amount: int
    status: TrailEntryStatus
    outcome: Outcome | Unset = UNSET
    balance: int | Unset = UNSET
    code: ErrorCode | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        operation = self.operation.value

        user_id = self.user_id

        amount = self.amount

        status = self.status.value

        outcome: str | Unset = UNSET
        if not isinstance(self.outcome, Unset):
            outcome = self.outcome.value

        balance = self.balance

        code: str | Unset = UNSET
        if not isinstance(self.code, Unset):
            code = self.code.value

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "operation": operation,
                "user_id": user_id,
                "amount": amount,
                "status": status,
            }
        )
        if outcome is not UNSET:
            field_dict["outcome"] = outcome
        if balance is not UNSET:
            field_dict["balance"] = balance
        if code is not UNSET:
            field_dict["code"] = code

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        operation = Operation(d.pop("operation"))

        user_id = d.pop("user_id")

        amount = d.pop("amount")

        status = TrailEntryStatus(d.pop("status"))

        _outcome = d.pop("outcome", UNSET)
        outcome: Outcome | Unset
        if isinstance(_outcome, Unset):
            outcome = UNSET
        else:
            outcome = Outcome(_outcome)

        balance = d.pop("balance", UNSET)

        _code = d.pop("code", UNSET)
        code: ErrorCode | Unset
        if isinstance(_code, Unset):
            code = UNSET
        else:
            code = ErrorCode(_code)

        trail_entry = cls(
            operation=operation,
            user_id=user_id,
            amount=amount,
            status=status,
            outcome=outcome,
            balance=balance,
            code=code,
        )

        return trail_entry
