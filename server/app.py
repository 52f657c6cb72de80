"""The HTTP adapter: a FastAPI app around one ledger store (:mod:`server.stores`)."""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Annotated, Any

from fastapi import FastAPI, Header, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.contract import (
    MAX_AMOUNT,
    TRANSACTION_ID,
    TRANSACTION_ID_MAX_LENGTH,
    TRANSACTION_ID_PATTERN,
    TRANSACTION_ID_RULE,
    USER_ID_MAX_LENGTH,
    USER_ID_PATTERN,
    load_contract,
)
from server.docs import add_offline_docs
from server.edge import RETRY_AFTER_SECONDS, ExactJsonRoute, RequestGuardMiddleware
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
    LatencyMiddleware,
    MeasuredStore,
    ServiceMetrics,
    store_kind,
)
from server.openings import MAX_REASON_LENGTH, REASON_PATTERN, Opening, OpeningKeyReused, OpeningRequest
from server.problems import PROBLEM_CONTENT_TYPE, ErrorCode, problem_body
from server.settings import Settings
from server.stores import LedgerStore, StorageUnavailable, open_store
from server.stores.memory import MemoryStore

request_log = logging.getLogger("server.requests")
opening_log = logging.getLogger("server.openings")

OPENING_REFUSALS: dict[str, str] = {
    "account_exists": "an account with user_id {user_id!r} exists: an opening never adds money to it",
    "balance_limit_exceeded": "the opening balance of {user_id!r} is above the ledger's balance limit",
}

CONTRACT_PATH_PREFIXES = ("/debit", "/credit", "/compensate_", "/accounts", "/transactions/")

#: The header that answers the ledger's position (see LedgerStore.position).
LEDGER_POSITION = "Ledger-Position"

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


class Problem(Exception):
    """An error answer: raised anywhere in the adapter, rendered as problem+json."""

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        detail: str,
        transaction_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.transaction_id = transaction_id
        self.headers = headers


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response:
    body = problem_body(problem.code, problem.status, problem.detail, problem.transaction_id)
    if problem.headers:
        headers = {**problem.headers, **(headers or {})}
    return Response(body, status_code=problem.status, media_type=PROBLEM_CONTENT_TYPE, headers=headers)


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


class RequestLog:
    """One log line, and one count in the metrics, per answered request, naming the replica that answered it."""

    def __init__(self, replica_id: str | None, metrics: ServiceMetrics) -> None:
        self.replica_id = replica_id
        self.metrics = metrics

    def __call__(
        self, transaction_id: str | None, operation: str, status: int, result: str, replayed: bool = False
    ) -> None:
        self.metrics.request(operation, status, "" if status == 200 else result)
        if request_log.isEnabledFor(logging.INFO):
            request_log.info(
                "",
                extra={
                    "fields": {
                        "transaction_id": transaction_id,
                        "operation": operation,
                        "status": status,
                        "outcome": result,
                        "replayed": replayed,
                        "replica_id": self.replica_id,
                    }
                },
            )


def _log_of(request: Request) -> RequestLog:
    log: RequestLog = request.app.state.request_log
    return log


def presented_bearer(scope: Scope) -> bytes | None:
    """The token of the request's one ``Authorization: Bearer`` header; None without exactly one such header."""
    presented = [value for name, value in scope["headers"] if name == b"authorization"]
    if len(presented) != 1:
        # Two Authorization headers are ambiguous, whatever they hold.
        return None
    scheme, _, credentials = presented[0].partition(b" ")
    # The scheme is case-insensitive (RFC 9110 section 11.1); the token is not.
    return credentials.strip(b" ") if scheme.lower() == b"bearer" else None


def bearer_authorized(scope: Scope, tokens: tuple[str, ...] | None) -> bool:
    """Whether the request carries one of the bearer tokens; every request does when the service asks for none."""
    if tokens is None:
        return True
    presented = presented_bearer(scope)
    if presented is None:
        return False
    # Every token is compared, so the time taken does not tell which one came close.
    matched = [hmac.compare_digest(presented, token.encode()) for token in tokens]
    return any(matched)


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


class BearerTokenMiddleware:
    """Refuses contract operations (and ``also_guarded`` paths, such as /metrics) without the bearer token."""

    def __init__(
        self, app: ASGIApp, tokens: tuple[str, ...], log: RequestLog, also_guarded: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.log = log
        self.guarded = CONTRACT_PATH_PREFIXES + also_guarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].startswith(self.guarded)
            and not bearer_authorized(scope, self.tokens)
        ):
            self.log(None, scope["path"], 401, "unauthorized")
            response = problem_response(
                Problem(401, "unauthorized", "this service requires Authorization: Bearer <token>"),
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class LedgerIdMiddleware:
    """Names the ledger in a ``Ledger-Id`` header on every answer of a contract operation, errors included.

    A client that sees the id change knows the service now holds another
    ledger, one that forgot what the old one recorded.
    """

    def __init__(self, app: ASGIApp, ledger_id: Callable[[], str | None]) -> None:
        self.app = app
        self.ledger_id = ledger_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(CONTRACT_PATH_PREFIXES):
            await self.app(scope, receive, send)
            return

        async def send_with_ledger_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                ledger_id = self.ledger_id()
                if ledger_id is not None:
                    message = {**message, "headers": [*message["headers"], (b"ledger-id", ledger_id.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_ledger_id)


class LedgerPositionMiddleware:
    """Answers ``Ledger-Position`` on an answer of a contract operation that lacks it, when the store can say.

    The endpoints answer the position their own store call read; this covers
    the answers made without one (a refused body, a reused key). Not on a 503:
    the store has just failed, and asking again would only wait for it. Not
    to a request without the token: it must not make the store work, nor
    learn how far the ledger has come.
    """

    def __init__(
        self, app: ASGIApp, position: Callable[[], Awaitable[int | None]], tokens: tuple[str, ...] | None
    ) -> None:
        self.app = app
        self.position = position
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not scope["path"].startswith(CONTRACT_PATH_PREFIXES)
            or not bearer_authorized(scope, self.tokens)
        ):
            await self.app(scope, receive, send)
            return

        async def send_with_position(message: Message) -> None:
            if (
                message["type"] == "http.response.start"
                and message["status"] != 503
                and all(name != b"ledger-position" for name, _ in message["headers"])
            ):
                # Read now, after the request arrived: at least what any answer before it said.
                position = await self.position()
                if position is not None:
                    message = {**message, "headers": [*message["headers"], (b"ledger-position", b"%d" % position)]}
            await send(message)

        await self.app(scope, receive, send_with_position)


class ContractApp(FastAPI):
    """A FastAPI app that serves the committed contract as its OpenAPI document."""

    def openapi(self) -> dict[str, Any]:
        return load_contract()


class _StoreSlot:
    """The app's store: set at build time for memory, at start-up for a database."""

    def __init__(self, store: LedgerStore | None) -> None:
        self._store = store

    @property
    def store(self) -> LedgerStore:
        if self._store is None:
            raise StorageUnavailable("the store is not open")
        return self._store

    def fill(self, store: LedgerStore | None, metrics: ServiceMetrics | None = None) -> None:
        """Hold ``store``; with ``metrics``, every call to it is timed and its failures counted."""
        if store is not None and metrics is not None:
            store = MeasuredStore(store, metrics, store_kind(store))
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
    slot = _StoreSlot(None)
    slot.fill(store, metrics)
    faults = CreditFaults(settings.credit_fault_rate, settings.credit_fault_after_commit_rate, seed=settings.fault_seed)
    log = RequestLog(settings.replica_id, metrics)
    if not settings.log_requests:
        request_log.disabled = True

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if store is not None:
            yield
            return
        opened = await open_store(settings.database, settings.accounts)
        slot.fill(opened, metrics)
        try:
            yield
        finally:
            slot.fill(None)
            await opened.close()

    app = ContractApp(
        title="Accounts service",
        version="1.0.0",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        exception_handlers={
            RequestValidationError: _on_validation_error,
            Problem: _on_problem,
            StorageUnavailable: _on_storage_unavailable,
            StarletteHTTPException: _on_http_exception,
            Exception: _on_unexpected_error,
        },
    )
    if isinstance(store, MemoryStore):
        app.state.ledger = store.ledger
    app.state.store_slot = slot
    app.state.faults = faults
    app.state.settings = settings
    app.state.request_log = log
    app.state.metrics = metrics
    # Added last, so it runs first: a refused request costs no body read and no token check.
    accepted_tokens = settings.accepted_tokens
    if accepted_tokens is not None:
        app.add_middleware(
            BearerTokenMiddleware,
            tokens=accepted_tokens,
            log=log,
            also_guarded=() if settings.metrics_public else ("/metrics",),
        )
    app.add_middleware(
        RequestGuardMiddleware,
        max_body_bytes=settings.max_body_bytes,
        on_refusal=lambda path, status, code: log(None, path, status, code),
    )
    # Outside the refusals above, so that they carry the position too.
    app.add_middleware(LedgerPositionMiddleware, position=slot.position, tokens=accepted_tokens)
    # Outermost, so that every answer carries it, the refusals above included.
    app.add_middleware(LedgerIdMiddleware, ledger_id=slot.ledger_id)
    # Outside everything else, so that the time of a refused request is measured too.
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    add_offline_docs(app, app.title)

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
            positioned = _position_header(position)
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

    @app.get("/accounts", operation_id="listAccounts", response_model=None, responses=_problems(400, 401, 500, 503))
    async def list_accounts(transaction_id: TransactionIdHeader) -> Response:
        found, position = await slot.store.accounts_with_position()
        accounts = [
            {"user_id": account.user_id, "balance": account.balance, "opening_balance": account.opening_balance}
            for account in found
        ]
        log(transaction_id, "list_accounts", 200, "read")
        return json_response({"accounts": accounts}, _position_header(position))

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
        positioned = _position_header(position)
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
        return json_response(trail, _position_header(position))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # Outside the contract, like /healthz: no transaction_id; the token guards it unless metrics_public.
    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    return app


def _position_header(position: int) -> dict[str, str]:
    return {LEDGER_POSITION: str(position)}


def _ledger_response(log: RequestLog, entry: Entry, *, replayed: bool, position: int) -> Response:
    headers = _position_header(position)
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


def _operation_name(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "name", None) or request.url.path


def _header_transaction_id(request: Request) -> str | None:
    """The request's transaction_id, when it is well-formed enough to echo back."""
    value = request.headers.get("transaction_id")
    return value if value is not None and TRANSACTION_ID.fullmatch(value) else None


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    _log_of(request)(exc.transaction_id, _operation_name(request), exc.status, exc.code)
    return problem_response(exc)


async def _on_storage_unavailable(request: Request, exc: Exception) -> Response:
    logging.getLogger("server").warning(
        "storage unavailable on %s: %s",
        request.url.path,
        exc,
        extra={"fields": {"transaction_id": _header_transaction_id(request)}},
    )
    problem = Problem(
        503,
        "storage_unavailable",
        "the ledger's database is unavailable; the outcome is unknown: retry under the same transaction_id",
        _header_transaction_id(request),
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
    _log_of(request)(problem.transaction_id, _operation_name(request), 503, problem.code)
    return problem_response(problem)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors: Sequence[Any] = exc.errors()
    header_errors = [error for error in errors if tuple(error.get("loc", ()))[:1] == ("header",)]
    if header_errors:
        if any(error.get("type") == "missing" for error in header_errors):
            detail = "the transaction_id header is required"
            misspelled = [name for name in ("transaction-id",) if name in request.headers]
            if misspelled:
                detail += ": it must be spelled transaction_id, with an underscore, not transaction-id"
            problem = Problem(400, "missing_transaction_id", detail)
        else:
            problem = Problem(400, "invalid_transaction_id", f"transaction_id must be {TRANSACTION_ID_RULE}")
    else:
        problem = Problem(422, "invalid_request", describe_validation_errors(errors), _header_transaction_id(request))
    _log_of(request)(problem.transaction_id, _operation_name(request), problem.status, problem.code)
    return problem_response(problem)


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """The first five of pydantic's errors, each as "where: what", for a problem's detail."""
    parts = []
    for error in errors[:5]:
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def allowed_methods(app: Starlette, path: str) -> str:
    """Every method some route answers on ``path``.

    Starlette's own 405 names the methods of the first matching route alone:
    Allow: GET for /accounts, which also answers POST.
    """
    methods = {
        method
        for route in app.routes
        if isinstance(route, Route) and route.methods and route.path_regex.match(path)
        for method in route.methods
    }
    return ", ".join(sorted(methods))


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": allowed_methods(request.app, request.url.path)}
    problem = Problem(exc.status_code, "invalid_request", str(exc.detail))
    _log_of(request)(None, request.url.path, exc.status_code, "invalid_request")
    return problem_response(problem, headers)


async def _on_unexpected_error(request: Request, exc: Exception) -> Response:
    transaction_id = _header_transaction_id(request)
    logging.getLogger("server").exception(
        "unexpected error on %s", request.url.path, extra={"fields": {"transaction_id": transaction_id}}
    )
    problem = Problem(500, "internal_error", "an unexpected error occurred; the outcome is unknown")
    _log_of(request)(transaction_id, _operation_name(request), 500, problem.code)
    # This handler runs outside every middleware, the ledger's two included.
    slot: _StoreSlot = request.app.state.store_slot
    settings: Settings = request.app.state.settings
    headers: dict[str, str] = {}
    ledger_id = slot.ledger_id()
    if ledger_id is not None:
        headers["Ledger-Id"] = ledger_id
    if request.url.path.startswith(CONTRACT_PATH_PREFIXES) and bearer_authorized(
        request.scope, settings.accepted_tokens
    ):
        # The answer to one unexpected error must not be lost to a second.
        with contextlib.suppress(Exception):
            position = await slot.position()
            if position is not None:
                headers.update(_position_header(position))
    return problem_response(problem, headers or None)
