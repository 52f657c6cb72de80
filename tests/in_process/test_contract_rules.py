"""Each rule the code keeps as a constant is the rule the contract states, read from the contract itself."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import pytest

from saga.cli.reading_commands import API_PAGE as CLI_API_PAGE
from saga.cli.reading_commands import MAX_PAGE as CLI_MAX_PAGE
from saga.directory import SERVICE_NAME, SERVICE_NAME_MAX_LENGTH, SERVICE_NAME_PATTERN
from saga.operator import MAX_REASON_LENGTH as ACTION_REASON_MAX_LENGTH
from saga.operator import check_action
from saga.records import ActionKind, OperatorAction
from saga.service.app import CURSOR_MAX_LENGTH, CURSOR_PATTERN, DEFAULT_PAGE, MAX_PAGE, MAX_WAIT_SECONDS
from saga.service.errors import TITLES as TRANSFERS_TITLES
from saga.service.errors import ErrorCode as TransfersErrorCode
from saga.steps import RECORDED_REJECTIONS
from saga.submission import IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_MAX_LENGTH, IDEMPOTENCY_KEY_PATTERN
from server.app import OPENING_REFUSALS, REJECTION_DETAILS
from server.contract import load_contract
from server.ledger import _REJECTION_STATUS, MAX_BALANCE, UNRECORDED_REJECTIONS, RejectionCode
from server.openings import MAX_REASON_LENGTH, REASON_PATTERN, OpeningRejection
from server.problems import TITLES, ErrorCode
from server.shared.contract_rules import (
    MAX_AMOUNT,
    TRANSACTION_ID,
    TRANSACTION_ID_MAX_LENGTH,
    TRANSACTION_ID_PATTERN,
    USER_ID,
    USER_ID_MAX_LENGTH,
    USER_ID_PATTERN,
)

OPENAPI = Path(__file__).resolve().parents[2] / "openapi"


def accounts_schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = load_contract(OPENAPI / "openapi.yaml")["components"]["schemas"]
    return schemas


def transfers_schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = load_contract(OPENAPI / "transfers.yaml")["components"]["schemas"]
    return schemas


def transfers_query(operation_id: str, name: str) -> dict[str, Any]:
    """The schema of a query parameter of one operation of the transfers contract."""
    for item in load_contract(OPENAPI / "transfers.yaml")["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and operation.get("operationId") == operation_id:
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "query" and parameter.get("name") == name:
                        schema: dict[str, Any] = parameter["schema"]
                        return schema
    raise AssertionError(f"{operation_id} has no query parameter {name}")


@pytest.mark.parametrize("schemas", [accounts_schemas, transfers_schemas], ids=["accounts", "transfers"])
def test_transaction_id_and_user_id_are_the_contracts(schemas: Any) -> None:
    transaction_id, user_id = schemas()["TransactionId"], schemas()["UserId"]
    assert transaction_id["pattern"] == TRANSACTION_ID_PATTERN
    assert transaction_id["maxLength"] == TRANSACTION_ID_MAX_LENGTH
    assert (user_id["pattern"], user_id["maxLength"]) == (USER_ID_PATTERN, USER_ID_MAX_LENGTH)
    assert transaction_id["minLength"] == user_id["minLength"] == 1


@pytest.mark.parametrize(
    ("pattern", "valid"),
    [(TRANSACTION_ID, "t-1"), (USER_ID, "alice"), (SERVICE_NAME, "bank-a"), (IDEMPOTENCY_KEY, "k 1")],
)
def test_the_compiled_patterns_let_no_final_newline_through(pattern: re.Pattern[str], valid: str) -> None:
    assert pattern.fullmatch(valid)
    assert not pattern.fullmatch(valid + "\n")


@pytest.mark.parametrize("schemas", [accounts_schemas, transfers_schemas], ids=["accounts", "transfers"])
def test_the_largest_amount_is_the_contracts(schemas: Any) -> None:
    assert schemas()["Amount"]["maximum"] == MAX_AMOUNT
    assert schemas()["Amount"]["minimum"] == 1


def test_an_opening_balance_and_its_reason_are_bounded_as_the_contract_says() -> None:
    opening = accounts_schemas()["OpenAccountRequest"]["properties"]
    assert (opening["opening_balance"]["minimum"], opening["opening_balance"]["maximum"]) == (0, MAX_BALANCE)
    assert opening["reason"]["pattern"] == REASON_PATTERN
    assert (opening["reason"]["minLength"], opening["reason"]["maxLength"]) == (1, MAX_REASON_LENGTH)


def test_the_error_codes_are_the_contracts_in_its_order() -> None:
    assert list(get_args(ErrorCode)) == accounts_schemas()["ErrorCode"]["enum"]
    assert list(TITLES) == list(get_args(ErrorCode))


def test_every_refusal_has_a_status_and_a_detail() -> None:
    assert set(_REJECTION_STATUS) == set(REJECTION_DETAILS) == set(get_args(RejectionCode))
    assert set(OPENING_REFUSALS) == set(get_args(OpeningRejection))


def test_the_saga_counts_as_recorded_what_the_ledger_records() -> None:
    assert set(get_args(RejectionCode)) - UNRECORDED_REJECTIONS == RECORDED_REJECTIONS


def test_the_transfers_rules_are_the_contracts() -> None:
    schemas = transfers_schemas()
    assert (schemas["ServiceName"]["pattern"], schemas["ServiceName"]["maxLength"]) == (
        SERVICE_NAME_PATTERN,
        SERVICE_NAME_MAX_LENGTH,
    )
    assert (schemas["IdempotencyKey"]["pattern"], schemas["IdempotencyKey"]["maxLength"]) == (
        IDEMPOTENCY_KEY_PATTERN,
        IDEMPOTENCY_KEY_MAX_LENGTH,
    )
    assert (schemas["Cursor"]["pattern"], schemas["Cursor"]["maxLength"]) == (CURSOR_PATTERN, CURSOR_MAX_LENGTH)
    assert (schemas["Reason"]["minLength"], schemas["Reason"]["maxLength"]) == (1, ACTION_REASON_MAX_LENGTH)
    limit = transfers_query("listTransfers", "limit")
    assert (limit["maximum"], limit["default"]) == (MAX_PAGE, DEFAULT_PAGE)
    assert transfers_query("getTransfer", "wait")["maximum"] == MAX_WAIT_SECONDS


def test_the_transfers_error_codes_are_the_contracts_in_its_order() -> None:
    assert list(get_args(TransfersErrorCode)) == transfers_schemas()["ErrorCode"]["enum"]
    assert list(TRANSFERS_TITLES) == list(get_args(TransfersErrorCode))


def test_the_command_line_pages_the_transfers_list_as_the_contract_allows() -> None:
    limit = transfers_query("listTransfers", "limit")
    assert (limit["maximum"], limit["default"]) == (CLI_MAX_PAGE, CLI_API_PAGE)


@pytest.mark.parametrize(
    "reason", ["x", "ticket\t42", "  spaced  ", "", "   ", "\t", "one\ntwo", "bell\x07", "del\x7f"]
)
def test_an_actions_reason_is_refused_exactly_when_the_contract_refuses_it(reason: str) -> None:
    contract_accepts = re.fullmatch(transfers_schemas()["Reason"]["pattern"], reason) is not None
    try:
        check_action(OperatorAction("t-1", ActionKind.CANCEL, "ops", reason, 0))
    except ValueError:
        accepted = False
    else:
        accepted = True
    assert accepted == contract_accepts
