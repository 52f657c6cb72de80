"""The HTTP adapter: a FastAPI app around one ledger store (:mod:`server.stores`)."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from decimal import Decimal
from typing import Annotated, Any

from fastapi import FastAPI, Header, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt
from starlette.convertors import Convertor, register_url_convertor
from starlette.types import Scope

from server.contract import load_contract
from server.docs import add_offline_docs
from server.edge import ExactJsonRoute
from server.errors import ErrorAnswers, problem_response
from server.errors import Problem as Problem  # raised by the routes, and by tests that stand in for a store
from server.faults import CreditFaults
from server.ledger import (
    COMPENSATE_CREDIT,
    COMPENSATE_DEBIT,
    CREDIT,
    DEBIT,
    MAX_BALANCE,
    Entry,
    IdempotencyKeyReused,
    Operation,
)
from server.metrics import (
    METRICS_CONTENT_TYPE,
    MeasuredStore,
    RequestLog,
    ServiceMetrics,
    request_log,
    store_kind,
)
from server.middleware import add_service_middleware, position_header, presented_bearer
from server.openings import MAX_REASON_LENGTH, REASON_PATTERN, Opening, OpeningKeyReused, OpeningRequest
from server.problems import PROBLEM_CONTENT_TYPE
from server.settings import Settings
from server.shared.contract_rules import (
    MAX_AMOUNT,
    TRANSACTION_ID_MAX_LENGTH,
    TRANSACTION_ID_PATTERN,
    USER_ID_MAX_LENGTH,
    USER_ID_PATTERN,
)
from server.stores import LedgerStore, StorageUnavailable, open_store
from server.stores.memory import MemoryStore
from server.timing import RequestTimes

opening_log = logging.getLogger("server.openings")

OPENING_REFUSALS: dict[str, str] = {
    "account_exists": "an account with user_id {user_id!r} exists: an opening never adds money to it",
    "balance_limit_exceeded": "the opening balance of {user_id!r} is above the ledger's balance limit",
}

REJECTION_DETAILS: dict[str, str] = {
    "unknown_user": "no account has user_id {user_id!r}",
    "insufficient_funds": "the balance of {user_id!r} is too low for {operation} of {amount}",
    "balance_limit_exceeded": "a credit of {amount} would take the balance of {user_id!r} above the limit",
    "reversal_exceeds_balance_limit": "giving back the debit of {amount} would take the balance of {user_id!r} above "
    "the limit: nothing changed and this refusal is not recorded; retry once the account has room",
    "transaction_compensated": "{operation} was refused: the transaction was already compensated",
    "transfer_completed": "{operation} was refused: the transfer completed on this service, which holds its applied "
    "credit under the same transaction_id; the debit and the credit stand",
}


OPERATION_IDS: dict[str, str] = {
    DEBIT: "debit",
    CREDIT: "credit",
    COMPENSATE_DEBIT: "compensateDebit",
    COMPENSATE_CREDIT: "compensateCredit",
}


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The route's documented error statuses, so the drift test can compare them to the contract."""
    return {status: {"content": {PROBLEM_CONTENT_TYPE: {}}} for status in statuses}


def integral_number(value: object, largest: int = MAX_AMOUNT) -> object:
    """Turn 2500.0 and 1e3 into integers: JSON Schema, and so the contract, counts them as integers.

    The body's numbers arrive as exact decimals (see server.edge), so
    999.99999999999999999 is not integral and stays refused, where a float
    would have rounded it to 1000. Every other value goes on unchanged for
    StrictInt to judge, so 2500.5, true and "2500" are still refused. Values
    far beyond any amount are left alone before int() could build a huge number.
    """
    # adjusted() reads the exponent without arithmetic, which could overflow
    # the decimal context for an input such as 1e999999999.
    if (
        isinstance(value, Decimal)
        and value.is_finite()
        and value.adjusted() <= len(str(largest))
        and value == value.to_integral_value()
    ):
        return int(value)
    if isinstance(value, float) and value.is_integer() and abs(value) <= largest * 10:
        return int(value)
    return value


def integral_balance(value: object) -> object:
    """:func:`integral_number` for a balance, which may be larger than any amount."""
    return integral_number(value, MAX_BALANCE)


class LedgerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Annotated[str, Field(min_length=1, max_length=USER_ID_MAX_LENGTH, pattern=USER_ID_PATTERN)]
    amount: Annotated[
        StrictInt, Field(ge=1, le=MAX_AMOUNT, description="Minor units (cents)."), BeforeValidator(integral_number)
    ]


class OpenAccountRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Annotated[str, Field(min_length=1, max_length=USER_ID_MAX_LENGTH, pattern=USER_ID_PATTERN)]
    opening_balance: Annotated[StrictInt, Field(ge=0, le=MAX_BALANCE), BeforeValidator(integral_balance)]
    reason: Annotated[str, Field(min_length=1, max_length=MAX_REASON_LENGTH, pattern=REASON_PATTERN)]


class _AnyTextConvertor(Convertor[str]):
    """Matches every path remainder, line breaks included, and hands it on whole.

    Starlette's ``path`` convertor is ``.*``: an encoded line break stops it,
    so /transactions/%0Aa fell through to the router's undocumented 404, and
    Python's ``$``, which matches before a final newline, let
    /transactions/a%0A be answered as transaction "a". Taking the text whole
    leaves every parameter to the validator, which answers 422.
    """

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anytext", _AnyTextConvertor())


TransactionIdHeader = Annotated[
    str,
    Header(
        alias="transaction_id",
        convert_underscores=False,
        min_length=1,
        max_length=TRANSACTION_ID_MAX_LENGTH,
        pattern=TRANSACTION_ID_PATTERN,
    ),
]


def json_response(payload: object, headers: dict[str, str] | None = None, *, status_code: int = 200) -> Response:
    return Response(
        json.dumps(payload, separators=(",", ":")),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


def opening_view(opening: Opening) -> dict[str, Any]:
    view: dict[str, Any] = {
        "transaction_id": opening.transaction_id,
        "user_id": opening.user_id,
        "opening_balance": opening.opening_balance,
        "operator": opening.operator,
        "reason": opening.reason,
        "recorded_at": opening.recorded_at,
        "status": opening.status,
    }
    if opening.rejection is not None:
        view["code"] = opening.rejection
    return view


def operator_named(scope: Scope, operator_tokens: Mapping[str, str], transaction_id: str) -> str:
    """The name of the operator whose token the request carries; Problem 401 or 403 when it carries none."""
    presented = presented_bearer(scope)
    if presented is None:
        raise Problem(
            401,
            "unauthorized",
            "opening an account requires Authorization: Bearer <operator token>",
            transaction_id,
            {"WWW-Authenticate": "Bearer"},
        )
    if not operator_tokens:
        raise Problem(
            403,
            "operator_only",
            "only an operator may open an account, and this service was started without --operator-token",
            transaction_id,
        )
    found = None
    for name, secret in operator_tokens.items():
        if hmac.compare_digest(presented, secret.encode()):
            found = name
    if found is None:
        raise Problem(403, "operator_only", "only an operator may open an account", transaction_id)
    return found


class ContractApp(FastAPI):
    """A FastAPI app that serves the committed contract as its OpenAPI document."""

    def openapi(self) -> dict[str, Any]:
        return load_contract()


class _StoreSlot:
    """The app's store: set at build time for memory, at start-up for a database."""

    def __init__(self, store: LedgerStore | None, times: RequestTimes) -> None:
        self._store = store
        self.times = times

    @property
    def store(self) -> LedgerStore:
        if self._store is None:
            raise StorageUnavailable("the store is not open")
        return self._store

    def fill(self, store: LedgerStore | None, metrics: ServiceMetrics | None = None) -> None:
        """Hold ``store``; with ``metrics``, every call to it is timed and its failures counted."""
        if store is not None and metrics is not None:
            store = MeasuredStore(store, metrics, store_kind(store), self.times)
        self._store = store

    def ledger_id(self) -> str | None:
        return None if self._store is None else self._store.ledger_id

    async def position(self) -> int | None:
        """The store's position now; None when the store is not open or cannot answer."""
        if self._store is None:
            return None
        try:
            return await self._store.position()
        except StorageUnavailable:
            return None


def create_app(settings: Settings | None = None, store: LedgerStore | None = None) -> FastAPI:
    """Build one accounts service.

    With the memory database (the default) and no ``store`` given, the app
    gets its own empty-history ledger now. A database store is opened when the
    app starts and closed when it stops; a ``store`` given here is used as is
    and left open.
    """
    settings = settings or Settings()
    if store is None and settings.database.kind == "memory":
        store = MemoryStore.create(settings.accounts)
    # One registry per app, so per replica process: nothing is shared between apps in one process.
    metrics = ServiceMetrics(settings.replica_id)
    # One set of request clocks per app too: the store's calls count towards each answer's Server-Timing.
    times = RequestTimes()
    slot = _StoreSlot(None, times)
    slot.fill(store, metrics)
    log = RequestLog(settings.replica_id, metrics)
    if not settings.log_requests:
        request_log.disabled = True
    errors = ErrorAnswers(log, slot.ledger_id, slot.position, settings.accepted_tokens)
    app = ContractApp(
        title="Accounts service",
        version="1.0.0",
        docs_url=None,
        redoc_url=None,
        lifespan=None if store is not None else _database_lifespan(slot, settings, metrics),
        exception_handlers=errors.handlers(),
    )
    if isinstance(store, MemoryStore):
        app.state.ledger = store.ledger
    app.state.metrics = metrics
    add_service_middleware(app, settings, log, slot.ledger_id, slot.position, times)
    add_offline_docs(app, app.title)
    faults = CreditFaults(settings.credit_fault_rate, settings.credit_fault_after_commit_rate, seed=settings.fault_seed)
    _add_ledger_operations(app, slot, faults, log)
    _add_account_routes(app, slot, log, settings)
    _add_service_routes(app, metrics)
    return app


def _database_lifespan(
    slot: _StoreSlot, settings: Settings, metrics: ServiceMetrics
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Open the database's store when the app starts, and close it when the app stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = await open_store(settings.database, settings.accounts)
        slot.fill(opened, metrics)
        try:
            yield
        finally:
            slot.fill(None)
            await opened.close()

    return lifespan


def _add_ledger_operations(app: FastAPI, slot: _StoreSlot, faults: CreditFaults, log: RequestLog) -> None:
    """The four ledger operations, each a POST; a new credit fails as ``faults`` draws."""
    metrics = log.metrics

    def ledger_endpoint(operation: Operation) -> Callable[[LedgerRequest, str], Awaitable[Response]]:
        faulted = operation == CREDIT

        async def endpoint(body: LedgerRequest, transaction_id: TransactionIdHeader) -> Response:
            # Drawn before the store call: a replay is answered from the record
            # whatever the draw, and a new credit the draw refuses is never decided.
            refuse_new = faulted and faults.fail_before_commit()
            try:
                execution, position = await slot.store.execute_with_position(
                    operation, transaction_id, body.user_id, body.amount, apply_new=not refuse_new
                )
            except IdempotencyKeyReused as error:
                raise Problem(422, "idempotency_key_reused", str(error), transaction_id) from None
            positioned = position_header(position)
            if execution is None:
                metrics.injected_fault("before_commit")
                raise Problem(
                    500, "injected_fault", "injected fault: the credit was not applied", transaction_id, positioned
                )
            entry, replayed = execution
            if faulted and not replayed and entry.outcome == "applied" and faults.fail_after_commit():
                metrics.injected_fault("after_commit")
                detail = "injected fault: the outcome is unknown"
                raise Problem(500, "injected_fault", detail, transaction_id, positioned)
            return _ledger_response(log, entry, replayed=replayed, position=position)

        endpoint.__name__ = operation
        return endpoint

    for operation in (DEBIT, CREDIT, COMPENSATE_DEBIT, COMPENSATE_CREDIT):
        app.router.add_api_route(
            f"/{operation}",
            ledger_endpoint(operation),
            methods=["POST"],
            operation_id=OPERATION_IDS[operation],
            response_model=None,
            responses=_problems(400, 401, 404, 409, 413, 422, 500, 503),
            route_class_override=ExactJsonRoute,
        )


def _add_account_routes(app: FastAPI, slot: _StoreSlot, log: RequestLog, settings: Settings) -> None:
    """Listing, opening and reading accounts, and reading a transaction's trail."""

    @app.get("/accounts", operation_id="listAccounts", response_model=None, responses=_problems(400, 401, 500, 503))
    async def list_accounts(transaction_id: TransactionIdHeader) -> Response:
        found, position = await slot.store.accounts_with_position()
        accounts = [
            {"user_id": account.user_id, "balance": account.balance, "opening_balance": account.opening_balance}
            for account in found
        ]
        log(transaction_id, "list_accounts", 200, "read")
        return json_response({"accounts": accounts}, position_header(position))

    async def open_account(body: OpenAccountRequest, transaction_id: TransactionIdHeader, request: Request) -> Response:
        operator = operator_named(request.scope, settings.operator_tokens, transaction_id)
        asked = OpeningRequest(transaction_id, body.user_id, body.opening_balance, operator, body.reason)
        try:
            opening, replayed = await slot.store.open_account(asked)
        except OpeningKeyReused as error:
            raise Problem(422, "idempotency_key_reused", str(error), transaction_id) from None
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        if opening.rejection is not None:
            log(transaction_id, "open_account", opening.status, opening.rejection, replayed)
            detail = OPENING_REFUSALS[opening.rejection].format(user_id=opening.user_id)
            return problem_response(Problem(409, opening.rejection, detail, transaction_id), headers)
        log(transaction_id, "open_account", 201, "opened", replayed)
        if not replayed:
            opening_log.info(
                "account %s opened with %d by operator %s: %s",
                opening.user_id,
                opening.opening_balance,
                opening.operator,
                opening.reason,
                extra={"fields": {"transaction_id": transaction_id}},
            )
        return json_response(opening_view(opening), headers, status_code=201)

    app.router.add_api_route(
        "/accounts",
        open_account,
        methods=["POST"],
        operation_id="openAccount",
        status_code=201,
        response_model=None,
        responses=_problems(400, 401, 403, 409, 413, 422, 500, 503),
        route_class_override=ExactJsonRoute,
    )

    # ``:anytext`` lets a user_id with an encoded slash or line break reach
    # the validator, which answers 422, instead of the router's undocumented 404.
    @app.get(
        "/accounts/{user_id:anytext}",
        operation_id="getAccount",
        response_model=None,
        responses=_problems(400, 401, 404, 422, 500, 503),
    )
    async def get_account(
        user_id: Annotated[str, Path(min_length=1, max_length=USER_ID_MAX_LENGTH, pattern=USER_ID_PATTERN)],
        transaction_id: TransactionIdHeader,
    ) -> Response:
        balance, position = await slot.store.balance_with_position(user_id)
        positioned = position_header(position)
        if balance is None:
            raise Problem(404, "unknown_user", f"no account has user_id {user_id!r}", transaction_id, positioned)
        log(transaction_id, "get_account", 200, "read")
        return json_response({"user_id": user_id, "balance": balance}, positioned)

    @app.get(
        "/transactions/{transaction_id:anytext}",
        operation_id="getTransaction",
        response_model=None,
        responses=_problems(400, 401, 422, 500, 503),
    )
    async def get_transaction(
        transaction_id: Annotated[
            str, Path(min_length=1, max_length=TRANSACTION_ID_MAX_LENGTH, pattern=TRANSACTION_ID_PATTERN)
        ],
        correlation_id: TransactionIdHeader,
    ) -> Response:
        found, position = await slot.store.trail_with_position(transaction_id)
        trail: dict[str, Any] = {"transaction_id": transaction_id, "entries": [_trail_entry(entry) for entry in found]}
        opening = await slot.store.opening(transaction_id)
        if opening is not None:
            trail["opening"] = opening_view(opening)
        log(correlation_id, "get_transaction", 200, "read")
        return json_response(trail, position_header(position))


def _add_service_routes(app: FastAPI, metrics: ServiceMetrics) -> None:
    """Outside the contract: liveness and the metrics."""

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # Outside the contract, like /healthz: no transaction_id; the token guards it unless metrics_public.
    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=METRICS_CONTENT_TYPE)


def _ledger_response(log: RequestLog, entry: Entry, *, replayed: bool, position: int) -> Response:
    headers = position_header(position)
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    log.metrics.ledger_outcome(entry, replayed=replayed)
    if entry.rejection is not None:
        detail = REJECTION_DETAILS[entry.rejection].format(
            user_id=entry.user_id, amount=entry.amount, operation=entry.operation
        )
        log(entry.transaction_id, entry.operation, entry.status, entry.rejection, replayed)
        return problem_response(Problem(entry.status, entry.rejection, detail, entry.transaction_id), headers)
    log(entry.transaction_id, entry.operation, 200, str(entry.outcome), replayed)
    return json_response(
        {
            "transaction_id": entry.transaction_id,
            "operation": entry.operation,
            "user_id": entry.user_id,
            "amount": entry.amount,
            "balance": entry.balance,
            "outcome": entry.outcome,
        },
        headers,
    )


def _trail_entry(entry: Entry) -> dict[str, Any]:
    view: dict[str, Any] = {
        "operation": entry.operation,
        "user_id": entry.user_id,
        "amount": entry.amount,
        "status": entry.status,
    }
    if entry.rejection is None:
        view["outcome"] = entry.outcome
        view["balance"] = entry.balance
    else:
        view["code"] = entry.rejection
    return view
