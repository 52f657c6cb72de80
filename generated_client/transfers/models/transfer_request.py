from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define

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
    """

    source: AccountAt
    target: AccountAt
    amount: int

    def to_dict(self) -> dict[str, Any]:
        source = self.source.to_dict()

        target = self.target.to_dict()

        amount = self.amount

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "source": source,
                "target": target,
                "amount": amount,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.account_at import AccountAt

        d = dict(src_dict)
        source = AccountAt.from_dict(d.pop("source"))

        target = AccountAt.from_dict(d.pop("target"))

        amount = d.pop("amount")

        transfer_request = cls(
            source=source,
            target=target,
            amount=amount,
        )

        return transfer_request
