from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define

from ..models.resolution import Resolution

T = TypeVar("T", bound="ResolveRequest")


@_attrs_define
class ResolveRequest:
    """
    Attributes:
        resolution (Resolution): `moved_by_hand`: the money was moved (or given back) outside the
            saga. `nothing_to_move`: the services' trails show nothing left to
            move.
        reason (str): Why, in one line, for whoever reads the timeline later (a ticket number helps).
    """

    resolution: Resolution
    reason: str

    def to_dict(self) -> dict[str, Any]:
        resolution = self.resolution.value

        reason = self.reason

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "resolution": resolution,
                "reason": reason,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        resolution = Resolution(d.pop("resolution"))

        reason = d.pop("reason")

        resolve_request = cls(
            resolution=resolution,
            reason=reason,
        )

        return resolve_request
