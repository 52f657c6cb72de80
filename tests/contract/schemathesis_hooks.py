"""Schemathesis checks of the accounts service beyond the built-in ones.

Loaded by the schemathesis CLI through ``SCHEMATHESIS_HOOKS=<path of this file>``
(see run_schemathesis.py), and imported by
test_schemathesis.py.
"""

from __future__ import annotations

from typing import Any

import schemathesis

#: The one server error the contract allows: /credit's fault injection.
INJECTED_FAULT = ("POST", "/credit", 500, "injected_fault")


def _problem_code(response: schemathesis.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


@schemathesis.check
def server_errors_are_injected_faults(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> None:
    """Every 5xx must be 500 ``injected_fault`` from POST /credit.

    With credit faults on, ``not_a_server_error`` is off for /credit, and this
    check keeps that exemption to the injected fault alone: an
    ``internal_error`` there is still a failure.
    """
    if response.status_code < 500:
        return
    code = _problem_code(response)
    answered = (case.method.upper(), case.operation.path, response.status_code, code)
    if answered != INJECTED_FAULT:
        raise AssertionError(
            f"{answered[0]} {answered[1]} answered {response.status_code} with code {code!r}: "
            "the only server error the contract allows is 500 injected_fault from POST /credit"
        )


@schemathesis.check
def valid_data_is_never_called_invalid(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> None:
    """Valid data may meet a 422 only as ``idempotency_key_reused``.

    A generated transaction_id often repeats with another body, and the
    contract answers that with 422 ``idempotency_key_reused``: a conflict with
    what the id recorded, not a malformed request. The configuration therefore
    lets ``positive_data_acceptance`` take a 422 on the ledger operations;
    this check keeps that allowance to the one code.
    """
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return
    code = _problem_code(response)
    if code != "idempotency_key_reused":
        raise AssertionError(f"valid data was refused with 422 {code!r}: only idempotency_key_reused may be")
