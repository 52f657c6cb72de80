from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.account_opening import AccountOpening
    from ..models.trail_entry import TrailEntry


T = TypeVar("T", bound="TransactionTrail")


@_attrs_define
class TransactionTrail:
    """
    Attributes:
        transaction_id (str):
        entries (list[TrailEntry]):
        opening (AccountOpening | Unset): An opening as recorded, the answer every repeat replays.
    """

    transaction_id: str
    entries: list[TrailEntry]
    opening: AccountOpening | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        transaction_id = self.transaction_id

        entries = []
        for entries_item_data in self.entries:
            entries_item = entries_item_data.to_dict()
            entries.append(entries_item)

        opening: dict[str, Any] | Unset = UNSET
        if not isinstance(self.opening, Unset):
            opening = self.opening.to_dict()

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "transaction_id": transaction_id,
                "entries": entries,
            }
        )
        if opening is not UNSET:
            field_dict["opening"] = opening

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.account_opening import AccountOpening
        from ..models.trail_entry import TrailEntry

        d = dict(src_dict)
        transaction_id = d.pop("transaction_id")

        entries = []
        _entries = d.pop("entries")
        for entries_item_data in _entries:
            entries_item = TrailEntry.from_dict(entries_item_data)

            entries.append(entries_item)

        _opening = d.pop("opening", UNSET)
        opening: AccountOpening | Unset
        if isinstance(_opening, Unset):
            opening = UNSET
        else:
            opening = AccountOpening.from_dict(_opening)

        transaction_trail = cls(
            transaction_id=transaction_id,
            entries=entries,
            opening=opening,
        )

        return transaction_trail
