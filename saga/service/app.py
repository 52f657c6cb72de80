"""The HTTP adapter of the transfers service: openapi/transfers.yaml over a saga log.

Every route reads or writes the log and nothing else: a submission is one
idempotent insert, a read is one query, a wait is :class:`EndWatch`. The
sagas are driven elsewhere (see saga/service/command.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParameter
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from saga.deadlines import deadline_problem, epoch_ms
from saga.directory import SERVICE_NAME_MAX_LENGTH, SERVICE_NAME_PATTERN, UnknownService
from saga.failures import LOG_FAILURES
from saga.ledger_watch import LedgerWatch
from saga.ledgers import ServiceQuarantined
from saga.logs import IdempotencyKeyConflict, SagaLog
from saga.logs.base import UnknownSaga, act_once
from saga.operator import MAX_REASON_LENGTH, ActionRefused, check_action
from saga.orchestrator import InvalidTransfer, validate, wall_clock_ms
from saga.records import ActionKind, OperatorAction, Resolution, SagaRecord
from saga.service.console import add_console
from saga.service.errors import ACTION_METHOD_NOT_ALLOWED, Problem, add_error_handlers, log_unavailable
from saga.service.middleware import ApiMetrics, add_transfers_middleware
from saga.service.presenting import Presenter
from saga.service.settings import TokenBook, TransfersSettings
from saga.service.waiting import EndWatch
from saga.states import SagaState
from saga.submission import IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_RULE
from saga.telemetry.metrics import AlertMetrics
from server.app import integral_number
from server.contract import load_contract
from server.edge import parse_json_exactly
from server.errors import describe_validation_errors
from server.shared.contract_rules import (
    MAX_AMOUNT,
    TRANSACTION_ID_MAX_LENGTH,
    TRANSACTION_ID_PATTERN,
    USER_ID_MAX_LENGTH,
    USER_ID_PATTERN,
)

#: openapi/transfers.yaml, through the link beside this module, so that an installed package carries its own copy.
CONTRACT_PATH: Final = Path(__file__).resolve().parent / "transfers.yaml"
#: The longest ``?wait`` the contract allows, in seconds.
MAX_WAIT_SECONDS: Final = 30
MAX_PAGE: Final = 500
DEFAULT_PAGE: Final = 50
CURSOR_PATTERN: Final = r"^[A-Za-z0-9_-]+$"
CURSOR_MAX_LENGTH: Final = 512
RFC_3339: Final = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


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
    tokens = TokenBook(settings)

    app = TransfersContractApp(title="Transfers service", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    _add_submission_routes(app, settings, log, present, now_ms)
    # The events' and the actions' routes come before the transfer's, or its
    # whole-remainder id would take their paths as ids.
    _add_events_route(app, log, present)
    _add_action_routes(app, settings, log, present, now_ms)
    _add_transfer_route(app, log, present, watch)
    _add_service_routes(app, log, alerts, registry)
    add_console(app, settings=settings, log=log, present=present, now_ms=now_ms, tokens=tokens)
    add_error_handlers(app)
    add_transfers_middleware(app, settings, tokens, metrics)
    return app


def _add_submission_routes(
    app: FastAPI, settings: TransfersSettings, log: SagaLog, present: Presenter, now_ms: Callable[[], int]
) -> None:
    """Submitting a transfer, and listing them."""
    ledgers = LedgerWatch(log, now_ms)

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
            raise log_unavailable(error) from None
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
            raise log_unavailable(error) from None
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
            raise log_unavailable(error) from None
        page = records[:limit]
        next_cursor = encode_cursor(page[-1]) if len(records) > limit else None
        return _json({"transfers": [present.transfer(record) for record in page], "next": next_cursor})


def _add_events_route(app: FastAPI, log: SagaLog, present: Presenter) -> None:
    # Every path remainder is taken whole (the anytext convertor of the accounts
    # service), so that an id with an encoded slash or line break is answered
    # 422 by the validator rather than 404 by the router.
    @app.get("/transfers/{transaction_id:anytext}/events", name="getTransferEvents")
    async def get_transfer_events(request: Request, transaction_id: TransactionIdPath) -> Response:
        request.state.transaction_id = transaction_id
        record = await _read(log, transaction_id)
        try:
            history = await log.history(transaction_id)
        except LOG_FAILURES as error:
            raise log_unavailable(error) from None
        events = [present.event(record, event) for event in history]
        return _json({"transaction_id": transaction_id, "events": events})


def _add_action_routes(
    app: FastAPI, settings: TransfersSettings, log: SagaLog, present: Presenter, now_ms: Callable[[], int]
) -> None:
    """An operator's cancel, retry and resolve, each a POST."""

    @app.post("/transfers/{transaction_id:anytext}/cancel", name="cancelTransfer")
    async def cancel_transfer(request: Request, transaction_id: TransactionIdPath) -> Response:
        actor = _operator(request, transaction_id, settings)
        body = await read_body(request, OperatorActionModel)
        return await _act(log, present, OperatorAction(transaction_id, ActionKind.CANCEL, actor, body.reason, now_ms()))

    @app.post("/transfers/{transaction_id:anytext}/retry", name="retryTransfer")
    async def retry_transfer(request: Request, transaction_id: TransactionIdPath) -> Response:
        actor = _operator(request, transaction_id, settings)
        body = await read_body(request, OperatorActionModel)
        return await _act(log, present, OperatorAction(transaction_id, ActionKind.RETRY, actor, body.reason, now_ms()))

    @app.post("/transfers/{transaction_id:anytext}/resolve", name="resolveTransfer")
    async def resolve_transfer(request: Request, transaction_id: TransactionIdPath) -> Response:
        actor = _operator(request, transaction_id, settings)
        body = await read_body(request, ResolveModel)
        action = OperatorAction(transaction_id, ActionKind.RESOLVE, actor, body.reason, now_ms(), body.resolution)
        return await _act(log, present, action)

    # Without these, getTransfer's whole-remainder id would take GET /transfers/X/cancel as the id X/cancel.
    for kind in ActionKind:
        app.add_api_route(
            f"/transfers/{{transaction_id:anytext}}/{kind.value}",
            _only_post,
            methods=["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"],
            name=ACTION_METHOD_NOT_ALLOWED,
            include_in_schema=False,
        )


def _add_transfer_route(app: FastAPI, log: SagaLog, present: Presenter, watch: EndWatch) -> None:
    @app.get("/transfers/{transaction_id:anytext}", name="getTransfer")
    async def get_transfer(
        request: Request,
        transaction_id: TransactionIdPath,
        wait: Annotated[int, Query(ge=0, le=MAX_WAIT_SECONDS)] = 0,
    ) -> Response:
        request.state.transaction_id = transaction_id
        record = await _read(log, transaction_id)
        if wait > 0 and not record.state.is_terminal:
            await watch.wait(transaction_id, wait)
            record = await _read(log, transaction_id)
        return _json(present.transfer(record))


def _add_service_routes(app: FastAPI, log: SagaLog, alerts: AlertMetrics, registry: CollectorRegistry) -> None:
    """Outside the transfers themselves: liveness, readiness and the metrics."""

    @app.get("/healthz", name="healthz")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz", name="readyz")
    async def readyz() -> Response:
        try:
            await log.states(["readiness-check"])
        except Exception as error:
            raise log_unavailable(error) from None
        return _json({"status": "ok"})

    @app.get("/metrics", name="metrics")
    async def prometheus_metrics() -> Response:
        await alerts.refresh()
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4; charset=utf-8")


async def _read(log: SagaLog, transaction_id: str) -> SagaRecord:
    try:
        record = await log.get(transaction_id)
    except LOG_FAILURES as error:
        raise log_unavailable(error) from None
    if record is None:
        raise Problem(404, "unknown_transfer", f"no transfer has the id {transaction_id!r}")
    return record


async def _act(log: SagaLog, present: Presenter, action: OperatorAction) -> Response:
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
        raise log_unavailable(error) from None
    return _json(present.transfer(record), 200, {"Idempotent-Replayed": "true"} if replayed else None)


def _operator(request: Request, transaction_id: str, settings: TransfersSettings) -> str:
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


async def _only_post(request: Request) -> Response:
    raise StarletteHTTPException(405, f"{request.method} is not allowed here; an action is a POST")


def _json(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(payload, separators=(",", ":")), status_code=status, media_type="application/json", headers=headers
    )
