from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.account_at import AccountAt


T = TypeVar("T", bound="TransferRequest")


@_attrs_define
class TransferRequest:
    """
    Attributes:
        source (AccountAt):
        target (AccountAt):
        amount (int): An amount of money in minor units (cents). The service writes it
            without a fraction; it reads `2500.0` as `2500`, and refuses any other
            fraction.
        deadline (datetime.datetime | None | Unset): RFC 3339, with a time zone; null or absent: none. After it the saga
            sends no new
            forward request: a debit never sent ends `FAILED`, a debit sent is
            given back (`COMPENSATED`), and a credit that already landed
            stands (`COMPLETED`); either of the first two with the code
            `deadline_exceeded`. At most a year ahead; a deadline already
            past is refused.
    """

    source: AccountAt
    target: AccountAt
    amount: int
    deadline: datetime.datetime | None | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        source = self.source.to_dict()

        target = self.target.to_dict()

        amount = self.amount

        deadline: None | str | Unset
        if isinstance(self.deadline, Unset):
            deadline = UNSET
        elif isinstance(self.deadline, datetime.datetime):
            deadline = self.deadline.isoformat()
        else:
            deadline = self.deadline

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "source": source,
                "target": target,
                "amount": amount,
            }
        )
        if deadline is not UNSET:
            field_dict["deadline"] = deadline

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.account_at import AccountAt

        d = dict(src_dict)
        source = AccountAt.from_dict(d.pop("source"))

        target = AccountAt.from_dict(d.pop("target"))

        amount = d.pop("amount")

        def _parse_deadline(data: object) -> datetime.datetime | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                deadline_type_0 = datetime.datetime.fromisoformat(data)

                return deadline_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None | Unset, data)

        deadline = _parse_deadline(d.pop("deadline", UNSET))

        transfer_request = cls(
            source=source,
            target=target,
            amount=amount,
            deadline=deadline,
        )

        return transfer_request
