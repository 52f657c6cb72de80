"""Schemathesis checks of the transfers service beyond the built-in ones.

Loaded by the schemathesis CLI through ``SCHEMATHESIS_HOOKS=<path of this file>``
(see run_schemathesis_transfers.py), and imported by
test_schemathesis_transfers.py. Each check judges the transfers contract's
operations alone, so importing it beside schemathesis_hooks.py leaves the
accounts runs as they were.
"""

from __future__ import annotations

from typing import Any

import schemathesis

#: The accounts services the contract runs start the transfers service with;
#: schemathesis-transfers.toml draws request bodies' service names from them.
SERVICES = ("bank-a", "bank-b")

CONTRACT_OPERATIONS = frozenset(
    {
        "POST /transfers",
        "GET /transfers",
        "GET /transfers/{transaction_id}",
        "GET /transfers/{transaction_id}/events",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
    }
)


def _problem_code(response: schemathesis.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def names_an_unknown_service(body: Any) -> bool:
    return isinstance(body, dict) and any(
        isinstance(account, dict) and account.get("service") not in SERVICES
        for account in (body.get("source"), body.get("target"))
    )


def names_one_account_twice(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("source"), dict) and body.get("source") == body.get("target")


def why_valid_data_may_meet_422(case: schemathesis.Case[Any], code: Any) -> str | None:
    """The rule outside the schema that lets this valid request meet 422 ``code``, or None."""
    label = case.operation.label
    if label == "POST /transfers":
        if code == "idempotency_key_reused":
            # A generated key often repeats with another body; only the service knows it does.
            return "the key was used for another transfer"
        if code == "unknown_service" and names_an_unknown_service(case.body):
            return "a service name the transfers service was not started with"
        if code == "invalid_request" and names_one_account_twice(case.body):
            return "the same account as source and target"
    if label == "GET /transfers" and code == "invalid_request" and "after" in (case.query or {}):
        # A cursor is opaque: the schema admits any token, the service only the ones it gave out.
        return "a cursor this service did not give out"
    return None


@schemathesis.check
def transfers_valid_data_is_never_called_invalid(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> None:
    """Valid data may meet a 422 only for a rule the schema cannot state.

    schemathesis-transfers.toml lets ``positive_data_acceptance`` take a 422
    on POST and GET /transfers; this check keeps that allowance to the rules
    in :func:`why_valid_data_may_meet_422`, each tested against the request
    itself where the request shows it, and fails any other 422 on valid data.
    """
    meta = case.meta
    if case.operation.label not in CONTRACT_OPERATIONS or meta is None or not meta.generation.mode.is_positive:
        return
    if response.status_code != 422:
        return
    code = _problem_code(response)
    if why_valid_data_may_meet_422(case, code) is None:
        raise AssertionError(
            f"{case.operation.label}: valid data was refused with 422 {code!r}, "
            "which no rule outside the schema explains"
        )
