"""The accounts service's error answers: every failure, the framework's included, as problem+json with its code."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from server.edge import RETRY_AFTER_SECONDS
from server.metrics import RequestLog
from server.middleware import CONTRACT_PATH_PREFIXES, bearer_authorized, position_header
from server.problems import PROBLEM_CONTENT_TYPE, ErrorCode, problem_body
from server.shared.contract_rules import TRANSACTION_ID, TRANSACTION_ID_RULE
from server.stores import StorageUnavailable
from server.timing import CLOCK_SCOPE_KEY, RequestClock, server_timing

#: As FastAPI types one: the exception is Any there.
ExceptionHandler = Callable[[Request, Any], Coroutine[Any, Any, Response]]


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


def _operation_name(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "name", None) or request.url.path


def _header_transaction_id(request: Request) -> str | None:
    """The request's transaction_id, when it is well-formed enough to echo back."""
    value = request.headers.get("transaction_id")
    return value if value is not None and TRANSACTION_ID.fullmatch(value) else None


class ErrorAnswers:
    """The app's exception handlers: each answers problem+json, and logs and counts the answer."""

    def __init__(
        self,
        log: RequestLog,
        ledger_id: Callable[[], str | None],
        position: Callable[[], Awaitable[int | None]],
        tokens: tuple[str, ...] | None,
    ) -> None:
        self.log = log
        self.ledger_id = ledger_id
        self.position = position
        self.tokens = tokens

    def handlers(self) -> dict[int | type[Exception], ExceptionHandler]:
        return {
            RequestValidationError: self.on_validation_error,
            Problem: self.on_problem,
            StorageUnavailable: self.on_storage_unavailable,
            StarletteHTTPException: self.on_http_exception,
            Exception: self.on_unexpected_error,
        }

    async def on_problem(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        self.log(exc.transaction_id, _operation_name(request), exc.status, exc.code)
        return problem_response(exc)

    async def on_storage_unavailable(self, request: Request, exc: Exception) -> Response:
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
        self.log(problem.transaction_id, _operation_name(request), 503, problem.code)
        return problem_response(problem)

    async def on_validation_error(self, request: Request, exc: Exception) -> Response:
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
            detail = describe_validation_errors(errors)
            problem = Problem(422, "invalid_request", detail, _header_transaction_id(request))
        self.log(problem.transaction_id, _operation_name(request), problem.status, problem.code)
        return problem_response(problem)

    async def on_http_exception(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request.app, request.url.path)}
        problem = Problem(exc.status_code, "invalid_request", str(exc.detail))
        self.log(None, request.url.path, exc.status_code, "invalid_request")
        return problem_response(problem, headers)

    async def on_unexpected_error(self, request: Request, exc: Exception) -> Response:
        transaction_id = _header_transaction_id(request)
        logging.getLogger("server").exception(
            "unexpected error on %s", request.url.path, extra={"fields": {"transaction_id": transaction_id}}
        )
        problem = Problem(500, "internal_error", "an unexpected error occurred; the outcome is unknown")
        self.log(transaction_id, _operation_name(request), 500, problem.code)
        # This handler runs outside every middleware, the ledger's two included.
        headers: dict[str, str] = {}
        ledger_id = self.ledger_id()
        if ledger_id is not None:
            headers["Ledger-Id"] = ledger_id
        clock = request.scope.get(CLOCK_SCOPE_KEY)
        if isinstance(clock, RequestClock):
            headers["Server-Timing"] = server_timing(clock).decode()
        if request.url.path.startswith(CONTRACT_PATH_PREFIXES) and bearer_authorized(request.scope, self.tokens):
            # The answer to one unexpected error must not be lost to a second.
            with contextlib.suppress(Exception):
                position = await self.position()
                if position is not None:
                    headers.update(position_header(position))
        return problem_response(problem, headers or None)
