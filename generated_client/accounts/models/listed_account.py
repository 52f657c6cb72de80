from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define

T = TypeVar("T", bound="ListedAccount")


@_attrs_define
class ListedAccount:
    """
    Attributes:
        user_id (str):
        balance (int): A balance in minor units (cents).
        opening_balance (int): A balance in minor units (cents).
    """

    user_id: str
    balance: int
    opening_balance: int

    def to_dict(self) -> dict[str, Any]:
        user_id = self.user_id

        balance = self.balance

        opening_balance = self.opening_balance

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "user_id": user_id,
                "balance": balance,
                "opening_balance": opening_balance,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        user_id = d.pop("user_id")

        balance = d.pop("balance")

        opening_balance = d.pop("opening_balance")

        listed_account = cls(
            user_id=user_id,
            balance=balance,
            opening_balance=opening_balance,
        )

        return listed_account
