from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define

from ..models.account_opening_status import AccountOpeningStatus
from ..models.error_code import ErrorCode
from ..types import UNSET, Unset

T = TypeVar("T", bound="AccountOpening")


@_attrs_define
class AccountOpening:
    """An opening as recorded, the answer every repeat replays.

    Attributes:
        transaction_id (str):
        user_id (str):
        opening_balance (int): A balance in minor units (cents).
        operator (str): The name of the operator token that asked.
        reason (str):
        recorded_at (datetime.datetime): When the opening was recorded, ISO 8601 UTC.
        status (AccountOpeningStatus): The HTTP status the opening answered, and answers on replay.
        code (ErrorCode | Unset):
    """

    transaction_id: str
    user_id: str
    opening_balance: int
    operator: str
    reason: str
    recorded_at: datetime.datetime
    status: AccountOpeningStatus
    code: ErrorCode | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        transaction_id = self.transaction_id

        user_id = self.user_id

        opening_balance = self.opening_balance

        operator = self.operator

        reason = self.reason

        recorded_at = self.recorded_at.isoformat()

        status = self.status.value

        code: str | Unset = UNSET
        if not isinstance(self.code, Unset):
            code = self.code.value

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "transaction_id": transaction_id,
                "user_id": user_id,
                "opening_balance": opening_balance,
                "operator": operator,
                "reason": reason,
                "recorded_at": recorded_at,
                "status": status,
            }
        )
        if code is not UNSET:
            field_dict["code"] = code

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        transaction_id = d.pop("transaction_id")

        user_id = d.pop("user_id")

        opening_balance = d.pop("opening_balance")

        operator = d.pop("operator")

        reason = d.pop("reason")

        recorded_at = datetime.datetime.fromisoformat(d.pop("recorded_at"))

        status = AccountOpeningStatus(d.pop("status"))

        _code = d.pop("code", UNSET)
        code: ErrorCode | Unset
        if isinstance(_code, Unset):
            code = UNSET
        else:
            code = ErrorCode(_code)

        account_opening = cls(
            transaction_id=transaction_id,
            user_id=user_id,
            opening_balance=opening_balance,
            operator=operator,
            reason=reason,
            recorded_at=recorded_at,
            status=status,
            code=code,
        )

        return account_opening
