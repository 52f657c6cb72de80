"""The HTTP adapter of the transfers service: openapi/transfers.yaml over a saga log.

Every route reads or writes the log and nothing else: a submission is one
idempotent insert, a read is one query, a wait is :class:`EndWatch`. The
sagas are driven elsewhere (see saga/service/command.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParameter
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saga.deadlines import deadline_problem, epoch_ms
from saga.directory import SERVICE_NAME_MAX_LENGTH, SERVICE_NAME_PATTERN, UnknownService
from saga.failures import LOG_FAILURES, one_line
from saga.ledger_watch import LedgerWatch
from saga.ledgers import ServiceQuarantined
from saga.logs import IdempotencyKeyConflict, SagaLog
from saga.logs.base import UnknownSaga, act_once
from saga.operator import MAX_REASON_LENGTH, ActionRefused, check_action
from saga.orchestrator import InvalidTransfer, validate, wall_clock_ms
from saga.records import ActionKind, OperatorAction, Resolution, SagaRecord
from saga.service.console import ConsoleHeaders, add_console
from saga.service.presenting import Presenter
from saga.service.settings import CONSOLE_PREFIX, TokenBook, TransfersSettings
from saga.service.waiting import EndWatch
from saga.states import SagaState
from saga.submission import IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_RULE
from saga.telemetry.metrics import AlertMetrics
from saga.telemetry.redact import redact
from server.app import integral_number
from server.contract import (
    MAX_AMOUNT,
    TRANSACTION_ID_MAX_LENGTH,
    TRANSACTION_ID_PATTERN,
    USER_ID_MAX_LENGTH,
    USER_ID_PATTERN,
    load_contract,
)
from server.edge import RETRY_AFTER_SECONDS, RequestGuardMiddleware, parse_json_exactly
from server.errors import describe_validation_errors

request_log = logging.getLogger("saga.api")

#: openapi/transfers.yaml, through the link beside this module, so that an installed package carries its own copy.
CONTRACT_PATH: Final = Path(__file__).resolve().parent / "transfers.yaml"
PROBLEM_CONTENT_TYPE: Final = "application/problem+json"
#: The longest ``?wait`` the contract allows, in seconds.
MAX_WAIT_SECONDS: Final = 30
MAX_PAGE: Final = 500
DEFAULT_PAGE: Final = 50
CURSOR_PATTERN: Final = r"^[A-Za-z0-9_-]+$"
CURSOR_MAX_LENGTH: Final = 512
RFC_3339: Final = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
#: The routes that answer 405 to every method but POST on the actions' paths.
ACTION_METHOD_NOT_ALLOWED: Final = "actionMethodNotAllowed"
#: Paths anyone may call, whatever tokens the service has.
PUBLIC_PATHS: Final = frozenset({"/healthz", "/readyz", "/openapi.json"})

#: The contract's ErrorCode, in its order; the edge (server.edge) answers request_header_too_large.
ErrorCode = Literal[
    "missing_idempotency_key",
    "invalid_idempotency_key",
    "invalid_request",
    "unauthorized",
    "unknown_service",
    "idempotency_key_reused",
    "service_quarantined",
    "unknown_transfer",
    "request_too_large",
    "internal_error",
    "log_unavailable",
    "service_overloaded",
    "request_header_too_large",
    "operator_only",
    "transfer_in_progress",
    "transfer_already_ended",
    "transfer_not_retryable",
    "transfer_not_awaiting_operator",
]

TITLES: Final[dict[str, str]] = {
    "missing_idempotency_key": "Missing Idempotency-Key header",
    "invalid_idempotency_key": "Invalid Idempotency-Key header",
    "invalid_request": "Invalid request",
    "unauthorized": "Unauthorized",
    "unknown_service": "Unknown service",
    "idempotency_key_reused": "Idempotency key reused",
    "service_quarantined": "Service quarantined",
    "unknown_transfer": "Unknown transfer",
    "request_too_large": "Request too large",
    "internal_error": "Internal error",
    "log_unavailable": "Saga log unavailable",
    "service_overloaded": "Service overloaded",
    "request_header_too_large": "Request header fields too large",
    "operator_only": "Operators only",
    "transfer_in_progress": "Transfer in progress",
    "transfer_already_ended": "Transfer already ended",
    "transfer_not_retryable": "Transfer not retryable",
    "transfer_not_awaiting_operator": "Transfer not awaiting an operator",
}


class Problem(Exception):
    def __init__(self, status: int, code: ErrorCode, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def _problem_response(problem: Problem) -> Response:
    body = {
        "type": f"/problems/{problem.code}",
        "title": TITLES[problem.code],
        "status": problem.status,
        "detail": problem.detail,
        "code": problem.code,
    }
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=problem.status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=problem.headers,
    )


def _log_unavailable(error: Exception) -> Problem:
    # The detail reaches the caller: no credential of the log's URL goes with it.
    return Problem(
        503,
        "log_unavailable",
        f"the saga log is unavailable ({redact(one_line(error))}); send the same request again later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


class AccountAtModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service: Annotated[str, Field(min_length=1, max_length=SERVICE_NAME_MAX_LENGTH, pattern=SERVICE_NAME_PATTERN)]
    user_id: Annotated[str, Field(min_length=1, max_length=USER_ID_MAX_LENGTH, pattern=USER_ID_PATTERN)]


class TransferRequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: AccountAtModel
    target: AccountAtModel
    amount: Annotated[StrictInt, Field(ge=1, le=MAX_AMOUNT), BeforeValidator(integral_number)]
    deadline: Annotated[AwareDatetime | None, BeforeValidator(text_or_null)] = None


def text_or_null(value: object) -> object:
    """An RFC 3339 date-time, or null: a number, even in a string, is not read as seconds since the epoch."""
    if value is not None and not (isinstance(value, str) and RFC_3339.fullmatch(value)):
        raise ValueError("a deadline is an RFC 3339 date-time with a time zone, such as 2027-06-30T17:00:00Z")
    return value


Reason = Annotated[str, Field(min_length=1, max_length=MAX_REASON_LENGTH)]


class OperatorActionModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


class ResolveModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: Resolution
    reason: Reason


def deadline_ms(deadline: datetime | None, now_ms: int) -> int | None:
    """The deadline in ms since the epoch; Problem 422 if it is past or too far ahead."""
    if deadline is None:
        return None
    problem = deadline_problem(deadline, now_ms)
    if problem is not None:
        raise Problem(422, "invalid_request", f"deadline: {problem}; nothing was recorded")
    return epoch_ms(deadline)


# -- what the API shows -------------------------------------------------------------


def encode_cursor(record: SagaRecord) -> str:
    raw = f"{record.created_at_ms}.{record.transaction_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The (created_at_ms, transaction_id) a cursor stands for; Problem 422 if it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        millis, _, transaction_id = text.partition(".")
        if (
            not millis.isdigit()
            or len(millis) > 16
            or not transaction_id
            or len(transaction_id) > TRANSACTION_ID_MAX_LENGTH
        ):
            raise ValueError(text)
        return int(millis), transaction_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Problem(422, "invalid_request", "after: not a cursor this service gave out") from None


# -- machinery ------------------------------------------------------------------------


class ApiMetrics:
    """The API's own metrics, beside the saga metrics of the same process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "transfers_api_requests",
            "Requests answered by the transfers API, by operation, status and problem code.",
            ["operation", "status", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "transfers_api_request_duration_seconds",
            "Time to answer one request of the transfers API (a wait included), by operation.",
            ["operation"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=registry,
        )


class CallerTokens:
    """Bearer tokens of the API's callers and operators: names the caller and its role, or refuses with 401."""

    def __init__(self, app: ASGIApp, tokens: TokenBook) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not self.tokens
            or path in PUBLIC_PATHS
            or path == CONSOLE_PREFIX
            or path.startswith(CONSOLE_PREFIX + "/")
        ):
            await self.app(scope, receive, send)
            return
        identified = self.tokens.bearer(scope["headers"])
        if identified is None:
            problem = Problem(
                401,
                "unauthorized",
                "this service requires Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await _problem_response(problem)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["caller"], state["role"] = identified
        await self.app(scope, receive, send)


class CountAndLog:
    """Counts, times and logs every answered request, by operation, status and problem code.

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's
    BaseHTTPMiddleware runs each request through an anyio task group and
    memory streams, a cost the service pays twice per transfer.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def answering(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # An error that escapes the app is answered (500) and logged further out, not counted here.
        await self.app(scope, receive, answering)
        # The router leaves the matched route in the scope; the routes and the
        # problem handlers leave what they learned in the request's state.
        operation = getattr(scope.get("route"), "name", None) or "unrouted"
        state: dict[str, Any] = scope.get("state", {})
        code = state.get("problem_code", "")
        self.metrics.requests.labels(operation, str(status), code).inc()
        self.metrics.latency.labels(operation).observe(time.perf_counter() - started)
        if request_log.isEnabledFor(logging.INFO):
            request_log.info(
                "",
                extra={
                    "fields": {
                        "operation": operation,
                        "status": status,
                        "code": code or None,
                        "transaction_id": state.get("transaction_id"),
                        "caller": state.get("caller"),
                    }
                },
            )


class TransfersContractApp(FastAPI):
    """Serves the committed transfers contract as its OpenAPI document."""

    def openapi(self) -> dict[str, Any]:
        return load_contract(CONTRACT_PATH)


TransactionIdPath = Annotated[
    str, PathParameter(min_length=1, max_length=TRANSACTION_ID_MAX_LENGTH, pattern=TRANSACTION_ID_PATTERN)
]


def _caller(request: Request) -> str | None:
    return getattr(request.state, "caller", None)


def _idempotency_key(request: Request) -> str:
    keys = request.headers.getlist("idempotency-key")
    if not keys:
        detail = "the Idempotency-Key header is required: the same key sends the same transfer at most once"
        raise Problem(400, "missing_idempotency_key", detail)
    if len(keys) > 1:
        raise Problem(400, "invalid_idempotency_key", f"the request has {len(keys)} Idempotency-Key headers; send one")
    key = keys[0]
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise Problem(400, "invalid_idempotency_key", f"Idempotency-Key must be {IDEMPOTENCY_KEY_RULE}")
    return key


BodyModel = TypeVar("BodyModel", bound=BaseModel)


async def read_body(request: Request, model: type[BodyModel]) -> BodyModel:
    """The request's JSON body as ``model``; Problem 422 if it is not one."""
    try:
        return model.model_validate(parse_json_exactly(await request.body()))
    except json.JSONDecodeError as error:
        raise Problem(422, "invalid_request", f"the body is not JSON as this service reads it: {error.msg}") from None
    except ValidationError as error:
        raise Problem(422, "invalid_request", describe_validation_errors(error.errors())) from None


def create_transfers_app(
    settings: TransfersSettings,
    log: SagaLog,
    *,
    watch: EndWatch | None = None,
    registry: CollectorRegistry | None = None,
    clock_ms: Callable[[], int] | None = None,
) -> FastAPI:
    """Build the transfers API over ``log``; the caller opens and closes the log, and drives the sagas."""
    watch = watch or EndWatch(log)
    registry = registry or CollectorRegistry(auto_describe=True)
    metrics = ApiMetrics(registry)
    present = Presenter(settings.directory)
    now_ms = clock_ms or wall_clock_ms
    # Read from the log at each scrape: every replica reports the same numbers, as the console's overview does.
    alerts = AlertMetrics(log, registry, now_ms, settings.stuck_after_seconds)
    ledgers = LedgerWatch(log, now_ms)
    tokens = TokenBook(settings)

    app = TransfersContractApp(title="Transfers service", docs_url=None, redoc_url=None, openapi_url="/openapi.json")

    # Where the decorator put it, innermost: a request CallerTokens refuses is not counted.
    app.add_middleware(CountAndLog, metrics=metrics)

    @app.post("/transfers", name="createTransfer")
    async def create_transfer(request: Request) -> Response:
        key = _idempotency_key(request)
        body = await read_body(request, TransferRequestModel)
        try:
            source = settings.directory.account(body.source.service, body.source.user_id)
            target = settings.directory.account(body.target.service, body.target.user_id)
        except UnknownService as error:
            raise Problem(422, "unknown_service", str(error)) from None
        try:
            validate(source, target, body.amount)
        except InvalidTransfer as error:
            raise Problem(422, "invalid_request", str(error)) from None
        try:
            await ledgers.refuse_quarantined(source.service_key, target.service_key)
        except ServiceQuarantined as refused:
            raise Problem(409, "service_quarantined", f"nothing was recorded: {refused}") from None
        except LOG_FAILURES as error:
            raise _log_unavailable(error) from None
        created_at = now_ms()
        deadline = deadline_ms(body.deadline, created_at)
        record = SagaRecord(
            str(uuid.uuid4()),
            source,
            target,
            body.amount,
            created_at_ms=created_at,
            updated_at_ms=created_at,
            idempotency_key=key,
            submitted_by=_caller(request),
            deadline_ms=deadline,
        )
        try:
            saga, created = await log.submit(record)
        except IdempotencyKeyConflict:
            raise Problem(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was already used for another transfer (another body, or another caller); "
                "nothing was recorded",
            ) from None
        except LOG_FAILURES as error:
            raise _log_unavailable(error) from None
        request.state.transaction_id = saga.transaction_id
        if created:
            return _json(present.transfer(saga), 201, {"Location": f"/transfers/{saga.transaction_id}"})
        return _json(present.transfer(saga), 200, {"Idempotent-Replayed": "true"})

    @app.get("/transfers", name="listTransfers")
    async def list_transfers(
        state: Annotated[SagaState | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, strict=False)] = DEFAULT_PAGE,
        after: Annotated[str | None, Query(min_length=1, max_length=CURSOR_MAX_LENGTH, pattern=CURSOR_PATTERN)] = None,
    ) -> Response:
        position = decode_cursor(after) if after is not None else None
        try:
            # One more than the page: whether it exists says whether a next page does.
            records = await log.page(state=state, limit=limit + 1, after=position)
        except LOG_FAILURES as error:
            raise _log_unavailable(error) from None
        page = records[:limit]
        next_cursor = encode_cursor(page[-1]) if len(records) > limit else None
        return _json({"transfers": [present.transfer(record) for record in page], "next": next_cursor})

    async def _read(transaction_id: str) -> SagaRecord:
        try:
            record = await log.get(transaction_id)
        except LOG_FAILURES as error:
            raise _log_unavailable(error) from None
        if record is None:
            raise Problem(404, "unknown_transfer", f"no transfer has the id {transaction_id!r}")
        return record

    # Every path remainder is taken whole (the anytext convertor of the accounts
    # service), so that an id with an encoded slash or line break is answered
    # 422 by the validator rather than 404 by the router; the events route
    # comes first, or the transfer's route would take its path as an id.
    @app.get("/transfers/{transaction_id:anytext}/events", name="getTransferEvents")
    async def get_transfer_events(request: Request, transaction_id: TransactionIdPath) -> Response:
        request.state.transaction_id = transaction_id
        record = await _read(transaction_id)
        try:
            history = await log.history(transaction_id)
        except LOG_FAILURES as error:
            raise _log_unavailable(error) from None
        events = [present.event(record, event) for event in history]
        return _json({"transaction_id": transaction_id, "events": events})

    async def act(request: Request, action: OperatorAction) -> Response:
        """Record an operator's action; the same call the console's forms make."""
        try:
            check_action(action)
        except ValueError as error:
            raise Problem(422, "invalid_request", f"reason: {error}") from None
        try:
            record, replayed = await act_once(log, action)
        except UnknownSaga:
            raise Problem(404, "unknown_transfer", f"no transfer has the id {action.transaction_id!r}") from None
        except ActionRefused as refused:
            raise Problem(409, refused.code, f"nothing was recorded: {refused.detail}") from None
        except LOG_FAILURES as error:
            raise _log_unavailable(error) from None
        return _json(present.transfer(record), 200, {"Idempotent-Replayed": "true"} if replayed else None)

    def operator(request: Request, transaction_id: str) -> str:
        """The operator's name; Problem 403 for anyone else."""
        request.state.transaction_id = transaction_id
        if getattr(request.state, "role", None) != "operator":
            detail = "only an operator may act on a transfer"
            if not settings.operator_tokens:
                detail += "; this service was started without --operator-token, so no one may"
            raise Problem(403, "operator_only", f"{detail}; nothing was recorded")
        name = _caller(request)
        assert name is not None
        return name

    @app.post("/transfers/{transaction_id:anytext}/cancel", name="cancelTransfer")
    async def cancel_transfer(request: Request, transaction_id: TransactionIdPath) -> Response:
        actor = operator(request, transaction_id)
        body = await read_body(request, OperatorActionModel)
        return await act(request, OperatorAction(transaction_id, ActionKind.CANCEL, actor, body.reason, now_ms()))

    @app.post("/transfers/{transaction_id:anytext}/retry", name="retryTransfer")
    async def retry_transfer(request: Request, transaction_id: TransactionIdPath) -> Response:
        actor = operator(request, transaction_id)
        body = await read_body(request, OperatorActionModel)
        return await act(request, OperatorAction(transaction_id, ActionKind.RETRY, actor, body.reason, now_ms()))

    @app.post("/transfers/{transaction_id:anytext}/resolve", name="resolveTransfer")
    async def resolve_transfer(request: Request, transaction_id: TransactionIdPath) -> Response:
        actor = operator(request, transaction_id)
        body = await read_body(request, ResolveModel)
        action = OperatorAction(transaction_id, ActionKind.RESOLVE, actor, body.reason, now_ms(), body.resolution)
        return await act(request, action)

    async def only_post(request: Request) -> Response:
        raise StarletteHTTPException(405, f"{request.method} is not allowed here; an action is a POST")

    # Without these, getTransfer's whole-remainder id would take GET /transfers/X/cancel as the id X/cancel.
    for kind in ActionKind:
        app.add_api_route(
            f"/transfers/{{transaction_id:anytext}}/{kind.value}",
            only_post,
            methods=["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"],
            name=ACTION_METHOD_NOT_ALLOWED,
            include_in_schema=False,
        )

    @app.get("/transfers/{transaction_id:anytext}", name="getTransfer")
    async def get_transfer(
        request: Request,
        transaction_id: TransactionIdPath,
        wait: Annotated[int, Query(ge=0, le=MAX_WAIT_SECONDS)] = 0,
    ) -> Response:
        request.state.transaction_id = transaction_id
        record = await _read(transaction_id)
        if wait > 0 and not record.state.is_terminal:
            await watch.wait(transaction_id, wait)
            record = await _read(transaction_id)
        return _json(present.transfer(record))

    @app.get("/healthz", name="healthz")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz", name="readyz")
    async def readyz() -> Response:
        try:
            await log.states(["readiness-check"])
        except Exception as error:
            raise _log_unavailable(error) from None
        return _json({"status": "ok"})

    @app.get("/metrics", name="metrics")
    async def prometheus_metrics() -> Response:
        await alerts.refresh()
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    add_console(app, settings=settings, log=log, present=present, now_ms=now_ms, tokens=tokens)

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        request.state.problem_code = exc.code
        return _problem_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return await on_problem(request, Problem(422, "invalid_request", describe_validation_errors(exc.errors())))

    def allowed_methods(path: str) -> str:
        # Starlette's 405 names the methods of the first route on the path alone:
        # Allow: POST for /transfers, which also answers GET. Of the routes
        # that match, only the most specific count: /transfers/X/cancel also
        # matches getTransfer's whole-remainder id, but is the cancel's path.
        matching = [
            route
            for route in app.routes
            if isinstance(route, Route)
            and route.methods
            and route.name != ACTION_METHOD_NOT_ALLOWED
            and route.path_regex.match(path)
        ]
        most_specific = max((route.path.count("/") for route in matching), default=0)
        methods = {
            method for route in matching if route.path.count("/") == most_specific for method in route.methods or ()
        }
        return ", ".join(sorted(methods))

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request.url.path)
        problem = Problem(exc.status_code, "invalid_request", str(exc.detail), headers or None)
        return await on_problem(request, problem)

    async def on_unexpected_error(request: Request, exc: Exception) -> Response:
        logging.getLogger("saga").exception("unexpected error on %s", request.url.path)
        problem = Problem(
            500, "internal_error", "an unexpected error occurred; whether anything was recorded is unknown"
        )
        return _problem_response(problem)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(Exception, on_unexpected_error)
    app.add_middleware(CallerTokens, tokens=tokens)
    app.add_middleware(
        RequestGuardMiddleware,
        max_body_bytes=settings.max_body_bytes,
        on_refusal=lambda *_: None,
        check_transaction_id=False,
    )
    # Outermost, so that the edge's own refusals (413, 431) and unexpected 500s under /ui carry them too.
    app.add_middleware(ConsoleHeaders, prefix=CONSOLE_PREFIX)
    app.state.watch = watch
    app.state.registry = registry
    return app


def _json(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(payload, separators=(",", ":")), status_code=status, media_type="application/json", headers=headers
    )
