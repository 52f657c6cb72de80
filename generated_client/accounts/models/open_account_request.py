from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define

T = TypeVar("T", bound="OpenAccountRequest")


@_attrs_define
class OpenAccountRequest:
    """
    Attributes:
        user_id (str):
        opening_balance (int): Minor units (cents) brought into the ledger with the account.
        reason (str): Why the account is opened, in one line, for the audit trail (a ticket number helps).
    """

    user_id: str
    opening_balance: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        user_id = self.user_id

        opening_balance = self.opening_balance

        reason = self.reason

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "user_id": user_id,
                "opening_balance": opening_balance,
                "reason": reason,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        user_id = d.pop("user_id")

        opening_balance = d.pop("opening_balance")

        reason = d.pop("reason")

        open_account_request = cls(
            user_id=user_id,
            opening_balance=opening_balance,
            reason=reason,
        )

        return open_account_request
