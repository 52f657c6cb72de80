"""The schemathesis contract tests in pytest, against the in-process app.

The same committed contract, configuration files and custom checks as
run_schemathesis.py, with fewer examples: every operation with every check
(examples, coverage and fuzzing phases, valid and invalid data), the stateful
link-following machine, and both again with 30% credit faults, where
``not_a_server_error`` on POST /credit is off. In both configurations
``positive_data_acceptance`` takes a 422 on the ledger operations, for a
reused transaction id. The tests at the end pin that each relaxation covers
what it says and no more.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.schemas import OpenApiSchema

from server import Settings, create_app
from server.app import Problem
from server.contract import load_contract
from tests.contract.run_schemathesis import ACCOUNTS, CONTRACT
from tests.contract.schemathesis_hooks import server_errors_are_injected_faults, valid_data_is_never_called_invalid
from tests.contract.test_drift import resolve

HERE = Path(__file__).resolve().parent

EXAMPLES = settings(
    max_examples=8,
    deadline=None,
    # The app answers in process, so any slowness is generation's own.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
STATEFUL = settings(EXAMPLES, max_examples=8, stateful_step_count=6)


#: Sent with every request: the service asks no token of callers, and this
#: one is an operator's, so that POST /accounts is driven past 401 and 403.
OPERATOR_TOKEN = "contract-operator-secret"
AS_OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def contract_schema(config: str, *, credit_fault_rate: float) -> OpenApiSchema:
    """The committed contract, driven against a fresh in-process app."""
    schema = schemathesis.openapi.from_path(CONTRACT, config=schemathesis.Config.from_path(HERE / config))
    schema.app = create_app(
        Settings(
            accounts=ACCOUNTS,
            credit_fault_rate=credit_fault_rate,
            log_requests=False,
            operator_tokens={"contract": OPERATOR_TOKEN},
        )
    )
    return schema


schema = contract_schema("schemathesis.toml", credit_fault_rate=0.0)
faulted_schema = contract_schema("schemathesis-credit-faults.toml", credit_fault_rate=0.3)


@schema.parametrize()
@EXAMPLES
def test_every_operation_meets_the_contract(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(headers=AS_OPERATOR)


@faulted_schema.parametrize()
@EXAMPLES
def test_every_operation_meets_the_contract_with_credit_faults(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(headers=AS_OPERATOR)


class AsOperator:
    def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
        return {"headers": AS_OPERATOR}


class LinkedCalls(AsOperator, schema.as_state_machine()):  # type: ignore[misc]
    pass


class LinkedCallsWithCreditFaults(AsOperator, faulted_schema.as_state_machine()):  # type: ignore[misc]
    pass


class TestLinkedCalls(LinkedCalls.TestCase):  # type: ignore[misc,name-defined]
    settings = STATEFUL


class TestLinkedCallsWithCreditFaults(LinkedCallsWithCreditFaults.TestCase):  # type: ignore[misc,name-defined]
    settings = STATEFUL


# -- the fault configuration relaxes exactly what it says, and no more -----------

SERVER_ERROR = "Server error"
CUSTOM_CHECK = f"Custom check failed: `{server_errors_are_injected_faults.__name__}`"


def failed_checks(case: schemathesis.Case[Any]) -> list[str]:
    try:
        case.call_and_validate()
    except FailureGroup as group:
        return sorted(failure.title for failure in group.exceptions)
    return []


def credit_case(target: OpenApiSchema) -> schemathesis.Case[Any]:
    return target["/credit"]["POST"].Case(headers={"transaction_id": "t1"}, body={"user_id": "alice", "amount": 100})


def fail_with_internal_error(*args: Any) -> Any:
    # Rendered by the app's own handler, as an unexpected error would be,
    # without re-raising into the in-process transport.
    raise Problem(500, "internal_error", "an unexpected error occurred; the outcome is unknown")


def test_with_the_fault_config_an_injected_fault_on_credit_passes_every_check() -> None:
    target = contract_schema("schemathesis-credit-faults.toml", credit_fault_rate=1.0)
    case = credit_case(target)
    assert failed_checks(case) == []
    assert target.app.state.ledger.balance("alice") == ACCOUNTS["alice"]


def test_without_the_fault_config_an_injected_fault_fails_not_a_server_error() -> None:
    target = contract_schema("schemathesis.toml", credit_fault_rate=1.0)
    assert failed_checks(credit_case(target)) == [SERVER_ERROR]


def test_with_the_fault_config_an_internal_error_on_credit_still_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    target = contract_schema("schemathesis-credit-faults.toml", credit_fault_rate=0.0)
    monkeypatch.setattr(target.app.state.ledger, "apply", fail_with_internal_error)
    assert failed_checks(credit_case(target)) == [CUSTOM_CHECK]


def test_with_the_fault_config_a_server_error_elsewhere_fails_both_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    target = contract_schema("schemathesis-credit-faults.toml", credit_fault_rate=0.0)
    monkeypatch.setattr(target.app.state.ledger, "apply", fail_with_internal_error)
    case = target["/debit"]["POST"].Case(headers={"transaction_id": "t1"}, body={"user_id": "alice", "amount": 100})
    assert failed_checks(case) == [CUSTOM_CHECK, SERVER_ERROR]


def judge_a_generated_valid_case(
    target: OpenApiSchema, prepare: Callable[[schemathesis.Case[Any]], object] = lambda case: None
) -> tuple[int, Any, list[str]]:
    """One schema-valid /debit request as schemathesis generates it: status, code and failed checks."""
    results: list[tuple[int, Any, list[str]]] = []

    @settings(EXAMPLES, max_examples=1, database=None)
    @given(case=target["/debit"]["POST"].as_strategy(generation_mode=GenerationMode.POSITIVE))
    def draw(case: schemathesis.Case[Any]) -> None:
        prepare(case)
        response = case.call()
        try:
            case.validate_response(response)
        except FailureGroup as group:
            failures = sorted(failure.title for failure in group.exceptions)
        else:
            failures = []
        results.append((response.status_code, response.json().get("code"), failures))

    draw()
    return results[0]


def test_valid_data_may_meet_a_422_for_a_reused_transaction_id() -> None:
    target = contract_schema("schemathesis.toml", credit_fault_rate=0.0)

    def use_its_id_first(case: schemathesis.Case[Any]) -> None:
        # No generated user_id has a space, so this body always differs.
        target.app.state.ledger.execute("debit", case.headers["transaction_id"], "not generated", 1)

    assert judge_a_generated_valid_case(target, use_its_id_first) == (422, "idempotency_key_reused", [])


def test_valid_data_refused_with_any_other_422_still_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    target = contract_schema("schemathesis.toml", credit_fault_rate=0.0)

    def refuse(*args: Any) -> Any:
        raise Problem(422, "invalid_request", "refused")

    monkeypatch.setattr(target.app.state.ledger, "recorded", refuse)
    assert judge_a_generated_valid_case(target) == (
        422,
        "invalid_request",
        [f"Custom check failed: `{valid_data_is_never_called_invalid.__name__}`"],
    )


def test_every_link_in_the_contract_is_a_rule_of_the_state_machine() -> None:
    # Links placed where OpenAPI does not read them (on the operation rather
    # than on a response) vanish without an error; this catches that.
    declared = {
        f"___{status}_{name}__"
        for item in load_contract()["paths"].values()
        for operation in item.values()
        for status, response in operation["responses"].items()
        for name in resolve(load_contract(), response).get("links", {})
    }
    rules = dir(schema.as_state_machine())
    assert len(declared) == 6
    assert {link for link in declared if any(link in rule for rule in rules)} == declared
