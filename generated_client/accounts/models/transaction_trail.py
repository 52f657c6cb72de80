from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define

if TYPE_CHECKING:
    from ..models.trail_entry import TrailEntry


T = TypeVar("T", bound="TransactionTrail")


@_attrs_define
class TransactionTrail:
    """
    Attributes:
        transaction_id (str):
        entries (list[TrailEntry]):
    """

    transaction_id: str
    entries: list[TrailEntry]

    def to_dict(self) -> dict[str, Any]:
        transaction_id = self.transaction_id

        entries = []
        for entries_item_data in self.entries:
            entries_item = entries_item_data.to_dict()
            entries.append(entries_item)

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "transaction_id": transaction_id,
                "entries": entries,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.trail_entry import TrailEntry

        d = dict(src_dict)
        transaction_id = d.pop("transaction_id")

        entries = []
        _entries = d.pop("entries")
        for entries_item_data in _entries:
            entries_item = TrailEntry.from_dict(entries_item_data)

            entries.append(entries_item)

        transaction_trail = cls(
            transaction_id=transaction_id,
            entries=entries,
        )

        return transaction_trail
