"""The transfers service's error answers: every failure, the framework's included, as problem+json with its code."""

from __future__ import annotations

import json
import logging
from typing import Final, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from saga.failures import one_line
from saga.telemetry.redact import redact
from server.edge import RETRY_AFTER_SECONDS
from server.errors import describe_validation_errors
from server.problems import PROBLEM_CONTENT_TYPE

#: The routes that answer 405 to every method but POST on the actions' paths.
ACTION_METHOD_NOT_ALLOWED: Final = "actionMethodNotAllowed"

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


def problem_response(problem: Problem) -> Response:
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


def log_unavailable(error: Exception) -> Problem:
    # The detail reaches the caller: no credential of the log's URL goes with it.
    return Problem(
        503,
        "log_unavailable",
        f"the saga log is unavailable ({redact(one_line(error))}); send the same request again later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    request.state.problem_code = exc.code
    return problem_response(exc)


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return await on_problem(request, Problem(422, "invalid_request", describe_validation_errors(exc.errors())))


def allowed_methods(app: FastAPI, path: str) -> str:
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
    methods = {method for route in matching if route.path.count("/") == most_specific for method in route.methods or ()}
    return ", ".join(sorted(methods))


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request.app, request.url.path)
    problem = Problem(exc.status_code, "invalid_request", str(exc.detail), headers or None)
    return await on_problem(request, problem)


async def on_unexpected_error(request: Request, exc: Exception) -> Response:
    logging.getLogger("saga").exception("unexpected error on %s", request.url.path)
    problem = Problem(500, "internal_error", "an unexpected error occurred; whether anything was recorded is unknown")
    return problem_response(problem)


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(Exception, on_unexpected_error)
