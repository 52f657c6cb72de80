from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

T = TypeVar("T", bound="TransferAccount")


@_attrs_define
class TransferAccount:
    """
    Attributes:
        service (None | str): The service's name. Null for a transfer recorded by URL (the CLI's
            `transfer` or `batch` over a shared log) at a service this
            transfers service has no name for.
        user_id (str):
    """

    service: None | str
    user_id: str

    def to_dict(self) -> dict[str, Any]:
        service: None | str
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

        def _parse_service(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        service = _parse_service(d.pop("service"))

        user_id = d.pop("user_id")

        transfer_account = cls(
            service=service,
            user_id=user_id,
        )

        return transfer_account
