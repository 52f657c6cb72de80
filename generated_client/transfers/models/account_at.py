from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define

T = TypeVar("T", bound="AccountAt")


@_attrs_define
class AccountAt:
    """
    Attributes:
        service (str): The name of an accounts service, as the transfers service was started with it.
        user_id (str):
    """

    service: str
    user_id: str

    def to_dict(self) -> dict[str, Any]:
        service = self.service

        user_id = self.user_id

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "service": service,
                "user_id": user_id,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        service = d.pop("service")

        user_id = d.pop("user_id")

        account_at = cls(
            service=service,
            user_id=user_id,
        )

        return account_at
