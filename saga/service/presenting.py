"""Saga log records as the transfers contract (openapi/transfers.yaml) shows them: for the API and the console."""

from __future__ import annotations

from typing import Any

from saga.deadlines import iso_time
from saga.directory import ServiceDirectory
from saga.records import AccountRef, Event, SagaRecord
from saga.telemetry.redact import redact


class Presenter:
    """Log records as the contract shows them; a service logged by URL is named when the directory knows it."""

    def __init__(self, directory: ServiceDirectory) -> None:
        self.directory = directory

    def service_name(self, account: AccountRef) -> str | None:
        if account.service is not None:
            return account.service
        for name in self.directory.names:
            if account.same_service(AccountRef(self.directory.urls(name), "")):
                return name
        return None

    def transfer(self, record: SagaRecord) -> dict[str, Any]:
        return {
            "transaction_id": record.transaction_id,
            "idempotency_key": record.idempotency_key,
            "state": record.state.value,
            "source": {"service": self.service_name(record.source), "user_id": record.source.user_id},
            "target": {"service": self.service_name(record.target), "user_id": record.target.user_id},
            "amount": record.amount,
            "created_at": iso_time(record.created_at_ms),
            "updated_at": iso_time(record.updated_at_ms),
            "attempts": record.attempts,
            # An error may quote a URL the log keeps: the caller gets it without credentials.
            "last_error": None if record.last_error is None else redact(record.last_error),
            "submitted_by": record.submitted_by,
            "deadline": None if record.deadline_ms is None else iso_time(record.deadline_ms),
            "code": record.code,
        }

    def event(self, record: SagaRecord, event: Event) -> dict[str, Any]:
        shown: dict[str, Any] = {"at": iso_time(event.at_ms), "kind": event.kind}
        if event.state is not None:
            shown["state"] = event.state.value
        if event.detail:
            shown["because"] = redact(event.detail)
        action = event.action
        if action is not None:
            shown |= {"action": action.kind.value, "actor": action.actor, "reason": action.reason}
            shown.pop("because", None)
            if action.resolution is not None:
                shown["resolution"] = action.resolution.value
        attempt = event.attempt
        if attempt is not None:
            account = record.source if attempt.step in ("debit", "compensate_debit") else record.target
            shown |= {
                "step": attempt.step,
                "attempt": attempt.number,
                "status": attempt.status,
                "code": attempt.code,
                "error": None if attempt.error is None else redact(attempt.error),
                "latency_us": attempt.latency_us,
                "service": self.service_name(account),
                "ledger_id": attempt.ledger_id,
            }
        # An action's owner column holds its actor, shown as such: no worker wrote it.
        shown |= {"worker": None if action is not None else event.owner, "epoch": event.epoch}
        return shown
