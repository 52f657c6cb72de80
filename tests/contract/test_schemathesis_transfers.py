"""The transfers service's contract run in pytest, and the custom check it relies on.

The integration tests are run_schemathesis_transfers.py's two runs with fewer
examples: live accounts services (bank-b with 30% credit faults) behind a
live transfers service, every check, valid and invalid data, the stateful
link-following phase, and, with an API token, 401 without it. The tests
after them pin that the custom check lets valid data meet a 422 only for the
rules it names, each one tested against the request, and no other.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.schemas import OpenApiSchema

from saga.directory import ServiceDirectory
from saga.logs.memory import MemorySagaLog
from saga.service.app import create_transfers_app
from saga.service.settings import TransfersSettings
from tests.contract.run_schemathesis_transfers import (
    CONFIG,
    CONTRACT,
    CREDIT_FAULT_RATES,
    RUNS,
    ContractRun,
    Outcome,
    build_parser,
    execute,
)
from tests.contract.schemathesis_transfers_hooks import (
    CONTRACT_OPERATIONS,
    SERVICES,
    transfers_valid_data_is_never_called_invalid,
    why_valid_data_may_meet_422,
)

CUSTOM_CHECK = f"Custom check failed: `{transfers_valid_data_is_never_called_invalid.__name__}`"
ALICE_TO_BOB = {
    "source": {"service": "bank-a", "user_id": "alice"},
    "target": {"service": "bank-b", "user_id": "bob"},
    "amount": 2500,
}


def run_contract(run: ContractRun) -> Outcome:
    # Few examples keep both runs, three services each, within a minute or so on two cores.
    outcome = execute(run, 1, 1, build_parser().parse_args(["--max-examples", "8"]))
    assert outcome.passed, (outcome.returncode, outcome.problems)
    return outcome


def statuses(outcome: Outcome) -> set[int]:
    return {status for (_, status, _), count in outcome.evidence.answers.items() if count}


@pytest.mark.integration
def test_a_service_without_api_tokens_meets_the_contract() -> None:
    outcome = run_contract(RUNS[0])
    assert outcome.run.api_token is None
    assert {201, 200, 404, 422} <= statuses(outcome)
    assert 401 not in statuses(outcome)
    assert outcome.states["COMPLETED"] > 0


@pytest.mark.integration
def test_a_service_with_an_api_token_meets_the_contract_and_refuses_requests_without_it() -> None:
    outcome = run_contract(RUNS[1])
    assert outcome.run.api_token is not None
    assert {201, 200, 401} <= statuses(outcome)
    assert outcome.evidence.answers[("POST /transfers", 401, "unauthorized")] > 0
    assert outcome.evidence.unrefused == []
    assert outcome.states["COMPLETED"] > 0


# -- what the runs are configured with ----------------------------------------------


def test_the_generated_service_names_are_those_the_runs_start_the_service_with() -> None:
    config = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    assert config["dictionaries"]["services"]["values"] == list(SERVICES)
    assert tuple(CREDIT_FAULT_RATES) == SERVICES
    assert sorted(CREDIT_FAULT_RATES.values()) == [0.0, 0.3]


def test_the_hooks_know_every_operation_of_the_contract() -> None:
    # An operation the hooks do not list would escape the custom check.
    contract = yaml.safe_load(CONTRACT.read_text(encoding="utf-8"))
    operations = {f"{method.upper()} {path}" for path, item in contract["paths"].items() for method in item}
    assert operations == CONTRACT_OPERATIONS


# -- the custom check: valid data meets a 422 only for a rule the schema cannot state --

schema = schemathesis.openapi.from_path(CONTRACT, config=schemathesis.Config.from_path(CONFIG))


def create(body: dict[str, Any]) -> schemathesis.Case[Any]:
    return schema["/transfers"]["POST"].Case(headers={"Idempotency-Key": "k1"}, body=body)


def account(service: str, user_id: str) -> dict[str, str]:
    return {"service": service, "user_id": user_id}


@pytest.mark.parametrize(
    ("case", "code", "allowed"),
    [
        (create(ALICE_TO_BOB), "idempotency_key_reused", True),
        (create(ALICE_TO_BOB), "unknown_service", False),
        (create({**ALICE_TO_BOB, "target": account("bank-z", "bob")}), "unknown_service", True),
        (create(ALICE_TO_BOB), "invalid_request", False),
        (create({**ALICE_TO_BOB, "target": account("bank-a", "alice")}), "invalid_request", True),
        # alice at bank-a and alice at bank-b are two accounts.
        (create({**ALICE_TO_BOB, "target": account("bank-b", "alice")}), "invalid_request", False),
        (schema["/transfers"]["GET"].Case(query={"after": "0"}), "invalid_request", True),
        (schema["/transfers"]["GET"].Case(query={"limit": 5}), "invalid_request", False),
        (schema["/transfers/{transaction_id}"]["GET"].Case(path_parameters={"transaction_id": "t1"}), None, False),
    ],
    ids=[
        "reused key",
        "unknown_service naming known services",
        "unknown_service naming an unknown one",
        "invalid_request for two accounts",
        "invalid_request for one account twice",
        "invalid_request for one user at two services",
        "invalid_request for a cursor",
        "invalid_request without a cursor",
        "any 422 on getTransfer",
    ],
)
def test_the_rules_that_let_valid_data_meet_422(case: schemathesis.Case[Any], code: str | None, allowed: bool) -> None:
    assert (why_valid_data_may_meet_422(case, code) is not None) is allowed


def in_process_schema(directory: ServiceDirectory) -> OpenApiSchema:
    target = schemathesis.openapi.from_path(CONTRACT, config=schemathesis.Config.from_path(CONFIG))
    target.app = create_transfers_app(TransfersSettings(directory=directory), MemorySagaLog())
    return target


def judge_a_generated_valid_transfer(
    target: OpenApiSchema, prepare: Callable[[schemathesis.Case[Any]], object]
) -> tuple[int, Any, list[str]]:
    """One schema-valid POST /transfers as schemathesis generates it: status, code, and what the check says."""
    results: list[tuple[int, Any, list[str]]] = []

    @settings(max_examples=1, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=target["/transfers"]["POST"].as_strategy(generation_mode=GenerationMode.POSITIVE))
    def draw(case: schemathesis.Case[Any]) -> None:
        prepare(case)
        response = case.call()
        try:
            # This check alone: the accounts contract's checks, registered by
            # test_schemathesis.py in the same session, judge another service.
            case.validate_response(response, checks=[transfers_valid_data_is_never_called_invalid])
        except FailureGroup as group:
            failures = sorted(failure.title for failure in group.exceptions)
        else:
            failures = []
        results.append((response.status_code, response.json().get("code"), failures))

    draw()
    return results[0]


def name_the_accounts(source: dict[str, str], target: dict[str, str]) -> Callable[[schemathesis.Case[Any]], None]:
    def prepare(case: schemathesis.Case[Any]) -> None:
        assert isinstance(case.body, dict)
        body: dict[str, Any] = {**case.body, "source": source, "target": target}
        case.body = body

    return prepare


def test_valid_data_naming_a_service_it_was_not_started_with_may_meet_unknown_service() -> None:
    target = in_process_schema(ServiceDirectory({"bank-a": ("http://127.0.0.1:9",)}))
    prepare = name_the_accounts(account("bank-a", "alice"), account("bank-z", "bob"))
    assert judge_a_generated_valid_transfer(target, prepare) == (422, "unknown_service", [])


def test_valid_data_naming_the_configured_services_fails_the_check_on_unknown_service() -> None:
    # A service started with other names than the configuration's: the check catches it.
    target = in_process_schema(ServiceDirectory({"bank-a": ("http://127.0.0.1:9",)}))
    prepare = name_the_accounts(account("bank-a", "alice"), account("bank-b", "bob"))
    assert judge_a_generated_valid_transfer(target, prepare) == (422, "unknown_service", [CUSTOM_CHECK])


def test_valid_data_refused_with_invalid_request_for_two_accounts_fails_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from saga.orchestrator import InvalidTransfer

    def refuse(*args: Any) -> None:
        raise InvalidTransfer("refused")

    monkeypatch.setattr("saga.service.app.validate", refuse)
    directory = ServiceDirectory({"bank-a": ("http://127.0.0.1:9",), "bank-b": ("http://127.0.0.1:10",)})
    prepare = name_the_accounts(account("bank-a", "alice"), account("bank-b", "bob"))
    assert judge_a_generated_valid_transfer(in_process_schema(directory), prepare) == (
        422,
        "invalid_request",
        [CUSTOM_CHECK],
    )


def test_valid_data_recorded_passes_the_check() -> None:
    directory = ServiceDirectory({"bank-a": ("http://127.0.0.1:9",), "bank-b": ("http://127.0.0.1:10",)})
    prepare = name_the_accounts(account("bank-a", "alice"), account("bank-b", "bob"))
    assert judge_a_generated_valid_transfer(in_process_schema(directory), prepare) == (201, None, [])
