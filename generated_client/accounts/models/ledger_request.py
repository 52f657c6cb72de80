from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define

T = TypeVar("T", bound="LedgerRequest")


@_attrs_define
class LedgerRequest:
    """
    Attributes:
        user_id (str):
        amount (int): An amount of money in minor units (cents). The service writes it
            without a fraction. It reads `2500.0` as `2500`, since JSON Schema
            counts a number with a zero fraction as an integer, and refuses any
            other fraction.
    """

    user_id: str
    amount: int

    def to_dict(self) -> dict[str, Any]:
        user_id = self.user_id

        amount = self.amount

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "user_id": user_id,
                "amount": amount,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        user_id = d.pop("user_id")

        amount = d.pop("amount")

        ledger_request = cls(
            user_id=user_id,
            amount=amount,
        )

        return ledger_request
