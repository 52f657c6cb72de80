from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define

from ..models.operation import Operation
from ..models.outcome import Outcome

T = TypeVar("T", bound="LedgerResult")


@_attrs_define
class LedgerResult:
    """
    Attributes:
        transaction_id (str):
        operation (Operation):
        user_id (str):
        amount (int): An amount of money in minor units (cents). The service writes it
            without a fraction. It reads `2500.0` as `2500`, since JSON Schema
            counts a number with a zero fraction as an integer, and refuses any
            other fraction.
        balance (int): A balance in minor units (cents).
        outcome (Outcome): `applied` for a debit or credit; `reversed` when a compensation undid an
            applied operation; `voided` when a compensation found nothing to undo and
            fenced the transaction id against a late arrival.
    """

    transaction_id: str
    operation: Operation
    user_id: str
    amount: int
    balance: int
    outcome: Outcome

    def to_dict(self) -> dict[str, Any]:
        transaction_id = self.transaction_id

        operation = self.operation.value

        user_id = self.user_id

        amount = self.amount

        balance = self.balance

        outcome = self.outcome.value

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "transaction_id": transaction_id,
                "operation": operation,
                "user_id": user_id,
                "amount": amount,
                "balance": balance,
                "outcome": outcome,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        transaction_id = d.pop("transaction_id")

        operation = Operation(d.pop("operation"))

        user_id = d.pop("user_id")

        amount = d.pop("amount")

        balance = d.pop("balance")

        outcome = Outcome(d.pop("outcome"))

        ledger_result = cls(
            transaction_id=transaction_id,
            operation=operation,
            user_id=user_id,
            amount=amount,
            balance=balance,
            outcome=outcome,
        )

        return ledger_result
