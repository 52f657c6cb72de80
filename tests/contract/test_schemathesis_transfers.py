"""The transfers service's contract run in pytest, and the hooks and custom checks it relies on.

The integration tests are run_schemathesis_transfers.py's two runs with fewer
examples: live accounts services (bank-b with 30% credit faults) behind a
live transfers service, every check, valid and invalid data, the stateful
link-following phase; without tokens every operator's action 403; with a
caller's and an operator's token, the actions taken with the operator's, 403
with the caller's, and 401 without a token. The tests after them pin that
the custom check lets valid data meet a 422 only for the rules it names, each
one tested against the request, and no other; that the deadline hook sends
most generated deadlines an hour ahead; and that the actions' check knows
each action's answers, against the app in-process, where nothing drives the
sagas, so that every action lands (200) as well as meets its 409.
"""

from __future__ import annotations

import asyncio
import tomllib
import zlib
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from saga.directory import ServiceDirectory
from saga.logs.memory import MemorySagaLog
from saga.records import SagaRecord
from saga.service.app import create_transfers_app
from saga.service.settings import TransfersSettings
from saga.states import SagaState
from tests.contract.run_schemathesis_transfers import (
    ACTIONS_REFUSED,
    CONFIG,
    CONTRACT,
    CONTRACT_LINKS_ONLY,
    CREDIT_FAULT_RATES,
    NO_AUTHORIZATION_NEEDED,
    RUNS,
    ContractRun,
    Evidence,
    Outcome,
    build_parser,
    execute,
    run_config,
    state_problems,
)
from tests.contract.schemathesis_transfers_hooks import (
    ACTIONS,
    CANCEL,
    CONTRACT_OPERATIONS,
    KEEP_ONE_DEADLINE_IN,
    RESOLVE,
    RETRY,
    SERVICES,
    deadline_anchor,
    transfers_actions_answer_as_their_operation_says,
    transfers_valid_data_is_never_called_invalid,
    usual_deadline,
    what_an_action_answer_breaks,
    why_a_deadline_is_refused,
    why_valid_data_may_meet_422,
)

CUSTOM_CHECK = f"Custom check failed: `{transfers_valid_data_is_never_called_invalid.__name__}`"
ACTIONS_CHECK = f"Custom check failed: `{transfers_actions_answer_as_their_operation_says.__name__}`"
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


def test_a_service_without_tokens_meets_the_contract_and_lets_no_one_act() -> None:
    outcome = run_contract(RUNS[0])
    assert outcome.run.api_token is None
    assert outcome.run.operator_token is None
    assert {201, 200, 403, 404, 422} <= statuses(outcome)
    assert 401 not in statuses(outcome)
    assert all(outcome.evidence.forbidden(action) for action in ACTIONS)
    assert outcome.evidence.actions_taken() == []
    assert outcome.states["COMPLETED"] > 0
    assert outcome.states["CANCELLED"] == outcome.states["RESOLVED"] == 0


def test_a_service_with_tokens_lets_its_operator_act_forbids_its_caller_and_refuses_requests_without_one() -> None:
    outcome = run_contract(RUNS[1])
    assert outcome.run.api_token is not None
    assert outcome.run.operator_token is not None
    assert {201, 200, 401, 403, 409} <= statuses(outcome)
    # With the operator's token every action met real transfers; with the caller's, 403 every time.
    assert all(outcome.evidence.reached(action) for action in ACTIONS)
    assert all(outcome.evidence.forbidden(action) for action in ACTIONS)
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
    operators = {
        f"{method.upper()} {path}"
        for path, item in contract["paths"].items()
        for method, operation in item.items()
        if "operators" in operation.get("tags", [])
    }
    assert operators == ACTIONS


def test_the_run_without_operator_tokens_takes_403_for_a_missing_authorization_on_the_actions_alone() -> None:
    committed = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    config = tomllib.loads(CONFIG.read_text(encoding="utf-8") + ACTIONS_REFUSED + NO_AUTHORIZATION_NEEDED)
    added = config["operations"][-1]
    assert added["include-tag"] == "operators"
    assert added["checks"] == {"missing_required_header": {"enabled": False}}
    assert "missing_auth" not in added["warnings"]
    assert config["operations"][:-1] == committed["operations"]


@pytest.mark.parametrize(
    "additions",
    [(), (ACTIONS_REFUSED,), (ACTIONS_REFUSED, NO_AUTHORIZATION_NEEDED), (CONTRACT_LINKS_ONLY,)],
    ids=["committed", "caller's pass", "no operator", "contract links only"],
)
def test_every_configuration_a_pass_uses_loads(tmp_path: Path, additions: tuple[str, ...]) -> None:
    config = run_config(str(tmp_path), "pass", *additions)
    loaded = schemathesis.Config.from_path(config)
    assert loaded.projects.default.checks.positive_data_acceptance.enabled


@pytest.mark.parametrize(
    ("states", "cancels", "problems"),
    [
        ({"COMPLETED": 3, "CANCELLED": 1}, 1, []),
        ({"COMPLETED": 3, "CANCELLED": 2}, 1, ["2 transfers ended CANCELLED, but only 1 cancels were answered 200"]),
        (
            {"COMPLETED": 3, "RESOLVED": 1},
            0,
            ["1 transfers needed attention (1 of them RESOLVED by the run's operator)"],
        ),
        (
            {"COMPLETED": 3, "NEEDS_ATTENTION": 1},
            0,
            ["1 transfers needed attention (0 of them RESOLVED by the run's operator)"],
        ),
        ({"FAILED": 3}, 0, ["no transfer completed, so no valid transfer moved money: {'FAILED': 3}"]),
    ],
    ids=["cancelled by the run", "cancelled by no one", "resolved", "needs attention", "none completed"],
)
def test_the_final_states_a_run_accepts(states: dict[str, int], cancels: int, problems: list[str]) -> None:
    evidence = Evidence()
    evidence.answers[(CANCEL, 200, None)] = cancels
    assert state_problems(Counter(states), evidence) == problems


# -- the custom check: valid data meets a 422 only for a rule the schema cannot state --

schema = schemathesis.openapi.from_path(CONTRACT, config=schemathesis.Config.from_path(CONFIG))


def create(body: dict[str, Any]) -> schemathesis.Case[Any]:
    return schema["/transfers"]["POST"].Case(headers={"Idempotency-Key": "k1"}, body=body)


def act(label: str, body: dict[str, Any], transaction_id: str = "t1") -> schemathesis.Case[Any]:
    path = label.removeprefix("POST ")
    return schema[path]["POST"].Case(path_parameters={"transaction_id": transaction_id}, body=body)


def ahead(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        (create({**ALICE_TO_BOB, "deadline": "2020-01-01T00:00:00Z"}), "invalid_request", True),
        (create({**ALICE_TO_BOB, "deadline": "9999-12-31T23:59:59+01:00"}), "invalid_request", True),
        (create({**ALICE_TO_BOB, "deadline": "2020-01-01T00:00:00"}), "invalid_request", True),
        (create({**ALICE_TO_BOB, "deadline": ahead(timedelta(hours=2))}), "invalid_request", False),
        (create({**ALICE_TO_BOB, "deadline": "2020-01-01T00:00:00Z"}), "unknown_service", False),
        (act(CANCEL, {"reason": "INC-1"}), "invalid_request", False),
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
        "invalid_request for a past deadline",
        "invalid_request for a deadline years ahead",
        "invalid_request for a deadline without a time zone",
        "invalid_request for a deadline two hours ahead",
        "unknown_service for a past deadline",
        "any 422 on an action",
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


def name_the_accounts(
    source: dict[str, str], target: dict[str, str], deadline: str | None = None
) -> Callable[[schemathesis.Case[Any]], None]:
    """Name these accounts, and this deadline or none (a drawn one may be refused, for its own test)."""

    def prepare(case: schemathesis.Case[Any]) -> None:
        assert isinstance(case.body, dict)
        body: dict[str, Any] = {**case.body, "source": source, "target": target}
        body.pop("deadline", None)
        if deadline is not None:
            body["deadline"] = deadline
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


# -- deadlines: the hook moves most drawn ones an hour ahead -----------------------------


def drawn_past_deadlines(*, kept: bool) -> list[str]:
    """Deadlines past for centuries, as the generator draws them: those the hook keeps, or those it moves."""
    drawn = [f"{year:04d}-06-15T12:00:00.5+02:00" for year in range(1000, 2000)]
    return [value for value in drawn if (zlib.crc32(value.encode()) % KEEP_ONE_DEADLINE_IN == 0) is kept]


def test_the_hook_moves_most_drawn_deadlines_to_one_an_hour_ahead() -> None:
    moved, kept = drawn_past_deadlines(kept=False), drawn_past_deadlines(kept=True)
    assert kept
    assert len(moved) >= 0.8 * (len(moved) + len(kept))
    sent = {usual_deadline(value) for value in moved}
    assert sent == {deadline_anchor().strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert why_a_deadline_is_refused(sent.pop()) is None
    assert timedelta(minutes=29) < deadline_anchor() - datetime.now(UTC) <= timedelta(hours=1)
    assert all(usual_deadline(value) == value for value in kept)


@pytest.mark.parametrize(
    "drawn",
    [ahead(timedelta(hours=2)), "2020-01-01T00:00:00", "2026-02-30T00:00:00Z", "2020-01-01", "soon", "", 5, None],
    ids=["two hours ahead", "no time zone", "no such day", "a date", "a word", "empty", "a number", "null"],
)
def test_the_hook_sends_good_deadlines_and_anything_but_a_date_time_as_drawn(drawn: Any) -> None:
    # A case stays as valid, or as invalid, as it was generated.
    assert usual_deadline(drawn) == drawn


@pytest.mark.parametrize(
    ("deadline", "why"),
    [
        ("2020-01-01T00:00:00Z", "a deadline that has passed"),
        (ahead(timedelta(days=400)), "a deadline more than a year ahead"),
        ("2027-01-01T00:00:00", "a deadline without a time zone"),
        (ahead(timedelta(hours=2)), None),
        ("2026-02-30T00:00:00Z", None),
        (None, None),
    ],
    ids=["past", "years ahead", "no time zone", "two hours ahead", "no such day", "none"],
)
def test_the_deadlines_the_service_may_refuse(deadline: Any, why: str | None) -> None:
    assert why_a_deadline_is_refused(deadline) == why


def both_services() -> ServiceDirectory:
    return ServiceDirectory({"bank-a": ("http://127.0.0.1:9",), "bank-b": ("http://127.0.0.1:10",)})


def test_a_drawn_deadline_the_hook_moves_is_recorded_an_hour_ahead() -> None:
    moved = drawn_past_deadlines(kept=False)[0]
    prepare = name_the_accounts(account("bank-a", "alice"), account("bank-b", "bob"), moved)
    assert judge_a_generated_valid_transfer(in_process_schema(both_services()), prepare) == (201, None, [])


def test_a_drawn_deadline_the_hook_keeps_may_meet_invalid_request() -> None:
    kept = drawn_past_deadlines(kept=True)[0]
    prepare = name_the_accounts(account("bank-a", "alice"), account("bank-b", "bob"), kept)
    assert judge_a_generated_valid_transfer(in_process_schema(both_services()), prepare) == (
        422,
        "invalid_request",
        [],
    )


# -- the operators' actions: each refused for its own reasons, each landing as it says --

CALLER_TOKEN = "caller-secret"
OPERATOR_TOKEN = "operator-secret"
#: The built-in checks of an answer alone, and the actions' own.
ACTION_CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    transfers_actions_answer_as_their_operation_says,
]


@pytest.mark.parametrize(
    ("label", "status", "body", "request_body", "allowed"),
    [
        (CANCEL, 409, {"code": "transfer_in_progress"}, {}, True),
        (CANCEL, 409, {"code": "transfer_already_ended"}, {}, True),
        (CANCEL, 409, {"code": "transfer_not_retryable"}, {}, False),
        (RETRY, 409, {"code": "transfer_not_retryable"}, {}, True),
        (RETRY, 409, {"code": "transfer_in_progress"}, {}, False),
        (RESOLVE, 409, {"code": "transfer_not_awaiting_operator"}, {}, True),
        (RESOLVE, 409, {"code": "transfer_already_ended"}, {}, False),
        (RETRY, 403, {"code": "operator_only"}, {}, True),
        (RETRY, 403, {"code": "unauthorized"}, {}, False),
        (CANCEL, 200, {"state": "CANCELLED", "code": "cancelled"}, {}, True),
        (CANCEL, 200, {"state": "PENDING", "code": None}, {}, False),
        (RETRY, 200, {"state": "COMPENSATING", "code": None}, {}, True),
        (RESOLVE, 200, {"state": "RESOLVED", "code": "moved_by_hand"}, {"resolution": "moved_by_hand"}, True),
        (RESOLVE, 200, {"state": "RESOLVED", "code": "nothing_to_move"}, {"resolution": "moved_by_hand"}, False),
        (RESOLVE, 200, {"state": "NEEDS_ATTENTION", "code": None}, {"resolution": "moved_by_hand"}, False),
    ],
)
def test_what_the_actions_check_takes(
    label: str, status: int, body: dict[str, Any], request_body: dict[str, Any], allowed: bool
) -> None:
    case = act(label, {"reason": "INC-1", **request_body})
    assert (what_an_action_answer_breaks(case, status, body) is None) is allowed


@pytest.fixture
def operated() -> tuple[OpenApiSchema, MemorySagaLog]:
    """The contract over the app in-process, with a caller and an operator, on a log nothing drives."""
    log = MemorySagaLog()
    settings = TransfersSettings(
        directory=both_services(), api_tokens={"caller": CALLER_TOKEN}, operator_tokens={"op": OPERATOR_TOKEN}
    )
    target = schemathesis.openapi.from_path(CONTRACT, config=schemathesis.Config.from_path(CONFIG))
    target.app = create_transfers_app(settings, log)
    return target, log


def a_transfer(log: MemorySagaLog, state: SagaState, *, epoch: int = 0) -> str:
    directory = both_services()
    record = SagaRecord(
        f"t-{state.value.lower()}-{epoch}",
        directory.account("bank-a", "alice"),
        directory.account("bank-b", "bob"),
        2500,
        created_at_ms=1_780_000_000_000,
        updated_at_ms=1_780_000_000_000,
        epoch=epoch,
        owner="worker-1" if epoch else None,
    )
    asyncio.run(log.create(record, state))
    return record.transaction_id


def answer(
    target: OpenApiSchema, label: str, transaction_id: str, body: dict[str, Any], token: str = OPERATOR_TOKEN
) -> tuple[int, dict[str, Any], str | None, list[str]]:
    """One action as schemathesis sends it: status, body, Idempotent-Replayed, and what the checks say."""
    case = target[label.removeprefix("POST ")]["POST"].Case(
        path_parameters={"transaction_id": transaction_id}, body=body
    )
    response = case.call(headers={"Authorization": f"Bearer {token}"})
    try:
        case.validate_response(response, checks=ACTION_CHECKS)
    except FailureGroup as group:
        failures = sorted(failure.title for failure in group.exceptions)
    else:
        failures = []
    replayed = {name.lower(): values for name, values in response.headers.items()}.get("idempotent-replayed")
    return response.status_code, response.json(), ",".join(replayed) if replayed else None, failures


def test_a_cancel_lands_before_a_run_takes_the_transfer_up_and_again_as_a_replay(
    operated: tuple[OpenApiSchema, MemorySagaLog],
) -> None:
    target, log = operated
    pending = a_transfer(log, SagaState.PENDING)
    status, body, replayed, failures = answer(target, CANCEL, pending, {"reason": "INC-1: wrong account"})
    assert (status, body["state"], body["code"], replayed, failures) == (200, "CANCELLED", "cancelled", None, [])
    status, body, replayed, failures = answer(target, CANCEL, pending, {"reason": "INC-1: asked again"})
    assert (status, body["state"], replayed, failures) == (200, "CANCELLED", "true", [])


def test_a_retry_lands_on_a_compensating_transfer(operated: tuple[OpenApiSchema, MemorySagaLog]) -> None:
    target, log = operated
    compensating = a_transfer(log, SagaState.COMPENSATING, epoch=1)
    status, body, _, failures = answer(target, RETRY, compensating, {"reason": "INC-2: room made"})
    assert (status, body["state"], failures) == (200, "COMPENSATING", [])


def test_a_resolve_lands_on_a_transfer_that_needs_attention_and_again_as_a_replay(
    operated: tuple[OpenApiSchema, MemorySagaLog],
) -> None:
    target, log = operated
    stopped = a_transfer(log, SagaState.NEEDS_ATTENTION, epoch=1)
    settled = {"resolution": "moved_by_hand", "reason": "INC-3: refund ref 99812"}
    status, body, replayed, failures = answer(target, RESOLVE, stopped, settled)
    assert (status, body["state"], body["code"], replayed, failures) == (200, "RESOLVED", "moved_by_hand", None, [])
    status, body, replayed, failures = answer(target, RESOLVE, stopped, settled)
    assert (status, body["state"], replayed, failures) == (200, "RESOLVED", "true", [])
    status, body, _, failures = answer(target, RESOLVE, stopped, {**settled, "resolution": "nothing_to_move"})
    assert (status, body["code"], failures) == (409, "transfer_not_awaiting_operator", [])


@pytest.mark.parametrize(
    ("label", "state", "epoch", "code"),
    [
        (CANCEL, SagaState.PENDING, 1, "transfer_in_progress"),
        (CANCEL, SagaState.DEBITING, 1, "transfer_in_progress"),
        (CANCEL, SagaState.COMPLETED, 1, "transfer_already_ended"),
        (RETRY, SagaState.PENDING, 0, "transfer_not_retryable"),
        (RETRY, SagaState.FAILED, 1, "transfer_not_retryable"),
        (RESOLVE, SagaState.COMPENSATED, 1, "transfer_not_awaiting_operator"),
    ],
    ids=["cancel, claimed", "cancel, debiting", "cancel, ended", "retry, pending", "retry, ended", "resolve, ended"],
)
def test_an_action_that_does_not_apply_meets_its_own_409(
    operated: tuple[OpenApiSchema, MemorySagaLog], label: str, state: SagaState, epoch: int, code: str
) -> None:
    target, log = operated
    transaction_id = a_transfer(log, state, epoch=epoch)
    body = {"reason": "INC-4", **({"resolution": "nothing_to_move"} if label == RESOLVE else {})}
    status, answered, _, failures = answer(target, label, transaction_id, body)
    assert (status, answered["code"], failures) == (409, code, [])


@pytest.mark.parametrize("label", sorted(ACTIONS))
def test_a_callers_token_meets_operator_only(operated: tuple[OpenApiSchema, MemorySagaLog], label: str) -> None:
    target, log = operated
    transaction_id = a_transfer(log, SagaState.NEEDS_ATTENTION)
    body = {"reason": "INC-5", **({"resolution": "nothing_to_move"} if label == RESOLVE else {})}
    status, answered, _, failures = answer(target, label, transaction_id, body, token=CALLER_TOKEN)
    assert (status, answered["code"], failures) == (403, "operator_only", [])
    record = asyncio.run(log.get(transaction_id))
    assert record is not None
    assert record.state is SagaState.NEEDS_ATTENTION
