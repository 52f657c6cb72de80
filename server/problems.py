"""RFC 9457 problem details with the contract's stable error codes."""

from __future__ import annotations

import json
from typing import Final, Literal

from server.ledger import RejectionCode
from server.openings import OpeningRejection

#: The contract's ErrorCode, in its order: the ledger's and the openings'
#: refusals are named where they are decided, and appear here once each.
ErrorCode = Literal[
    "missing_transaction_id",
    "invalid_transaction_id",
    "invalid_request",
    "unauthorized",
    RejectionCode,
    "idempotency_key_reused",
    "injected_fault",
    "internal_error",
    "storage_unavailable",
    "request_too_large",
    "service_overloaded",
    "request_header_too_large",
    "operator_only",
    OpeningRejection,
]

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"

TITLES: Final[dict[str, str]] = {
    "missing_transaction_id": "Missing transaction_id header",
    "invalid_transaction_id": "Invalid transaction_id header",
    "invalid_request": "Invalid request",
    "unauthorized": "Unauthorized",
    "unknown_user": "Unknown user",
    "insufficient_funds": "Insufficient funds",
    "balance_limit_exceeded": "Balance limit exceeded",
    "reversal_exceeds_balance_limit": "Reversal exceeds balance limit",
    "transaction_compensated": "Transaction compensated",
    "transfer_completed": "Transfer completed",
    "idempotency_key_reused": "Idempotency key reused",
    "injected_fault": "Injected fault",
    "internal_error": "Internal error",
    "storage_unavailable": "Storage unavailable",
    "request_too_large": "Request too large",
    "service_overloaded": "Service overloaded",
    "request_header_too_large": "Request header fields too large",
    "operator_only": "Operators only",
    "account_exists": "Account exists",
}


def problem_body(code: ErrorCode, status: int, detail: str, transaction_id: str | None = None) -> bytes:
    problem: dict[str, object] = {
        "type": f"/problems/{code}",
        "title": TITLES[code],
        "status": status,
        "detail": detail,
        "code": code,
    }
    if transaction_id is not None:
        problem["transaction_id"] = transaction_id
    return json.dumps(problem, separators=(",", ":")).encode()
