"""The service side of one saga: the audit trail each of its services keeps under its transaction_id.

``python -m saga show ID --trail`` prints it beside the saga's own history, so
one transfer can be followed from the orchestrator's log to every ledger entry
it caused, by the one id both sides record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from generated_client.accounts.api.accounts import get_transaction
from generated_client.accounts.models import TransactionTrail
from saga.clients import ServiceClients
from saga.records import SagaRecord
from saga.replicas import describe, first_reachable


@dataclass(frozen=True, slots=True)
class ServiceTrail:
    service: str
    #: The entries as the service answers them (operation, user_id, amount, status, outcome or code, balance).
    entries: list[dict[str, Any]] | None
    #: Why the trail could not be read, when it could not.
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"service": self.service, "error": self.error}
        return {"service": self.service, "entries": self.entries}

    def lines(self) -> list[str]:
        if self.error is not None:
            return [f"  trail at {self.service}: cannot read it: {self.error}"]
        lines = [f"  trail at {self.service}: {len(self.entries or [])} entries"]
        for entry in self.entries or []:
            answer = entry.get("outcome") or entry.get("code")
            balance = f", balance {entry['balance']}" if "balance" in entry else ""
            lines.append(
                f"    {entry['operation']} {entry['user_id']} {entry['amount']}: {entry['status']} {answer}{balance}"
            )
        return lines


async def service_trails(record: SagaRecord, token: str | None) -> list[ServiceTrail]:
    """The trail under ``record``'s id at its source's service and, if another, its target's."""
    services: dict[str, tuple[str, ...]] = {}
    for account in (record.source, record.target):
        services.setdefault(account.service_url, account.urls)
    trails = []
    async with ServiceClients(token=token, connections=len(services) * 2) as reader:
        for service, urls in services.items():
            try:
                # The read carries the saga's own id, so the service's log line for it is found by that id too.
                answer = await first_reachable(
                    urls,
                    reader.replicas,
                    lambda url: get_transaction.asyncio(
                        record.transaction_id,
                        client=reader.client_for(url),
                        transaction_id_header=record.transaction_id,
                    ),
                )
            except Exception as error:
                trails.append(ServiceTrail(service, None, describe(error)))
                continue
            if isinstance(answer, TransactionTrail):
                trails.append(ServiceTrail(service, [entry.to_dict() for entry in answer.entries]))
            else:
                trails.append(ServiceTrail(service, None, getattr(answer, "detail", None) or "no readable answer"))
    return trails
