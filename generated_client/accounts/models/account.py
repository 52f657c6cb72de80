from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define

T = TypeVar("T", bound="Account")


@_attrs_define
class Account:
    """
    Attributes:
        user_id (str):
        balance (int): A balance in minor units (cents).
    """

    user_id: str
    balance: int

    def to_dict(self) -> dict[str, Any]:
        user_id = self.user_id

        balance = self.balance

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "user_id": user_id,
                "balance": balance,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        user_id = d.pop("user_id")

        balance = d.pop("balance")

        account = cls(
            user_id=user_id,
            balance=balance,
        )

        return account
