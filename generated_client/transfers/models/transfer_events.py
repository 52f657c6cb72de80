from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define

if TYPE_CHECKING:
    from ..models.transfer_event import TransferEvent


T = TypeVar("T", bound="TransferEvents")


@_attrs_define
class TransferEvents:
    """
    Attributes:
        transaction_id (str):
        events (list[TransferEvent]):
    """

    transaction_id: str
    events: list[TransferEvent]

    def to_dict(self) -> dict[str, Any]:
        transaction_id = self.transaction_id

        events = []
        for events_item_data in self.events:
            events_item = events_item_data.to_dict()
            events.append(events_item)

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "transaction_id": transaction_id,
                "events": events,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.transfer_event import TransferEvent

        d = dict(src_dict)
        transaction_id = d.pop("transaction_id")

        events = []
        _events = d.pop("events")
        for events_item_data in _events:
            events_item = TransferEvent.from_dict(events_item_data)

            events.append(events_item)

        transfer_events = cls(
            transaction_id=transaction_id,
            events=events,
        )

        return transfer_events
