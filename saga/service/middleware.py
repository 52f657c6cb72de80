"""The transfers service's middleware: the callers' tokens, and a count, a time and a log line per request."""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saga.service.console import ConsoleHeaders
from saga.service.errors import Problem, problem_response
from saga.service.settings import CONSOLE_PREFIX, TokenBook, TransfersSettings
from server.edge import RequestGuardMiddleware

request_log = logging.getLogger("saga.api")

#: Paths anyone may call, whatever tokens the service has.
PUBLIC_PATHS: Final = frozenset({"/healthz", "/readyz", "/openapi.json"})


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
            await problem_response(problem)(scope, receive, send)
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


def add_transfers_middleware(app: FastAPI, settings: TransfersSettings, tokens: TokenBook, metrics: ApiMetrics) -> None:
    """Wrap ``app`` in the service's middleware, in the order each needs."""
    # Innermost: a request CallerTokens refuses is not counted.
    app.add_middleware(CountAndLog, metrics=metrics)
    app.add_middleware(CallerTokens, tokens=tokens)
    app.add_middleware(
        RequestGuardMiddleware,
        max_body_bytes=settings.max_body_bytes,
        on_refusal=lambda *_: None,
        check_transaction_id=False,
    )
    # Outermost, so that the edge's own refusals (413, 431) and unexpected 500s under /ui carry them too.
    app.add_middleware(ConsoleHeaders, prefix=CONSOLE_PREFIX)
