"""Prometheus metrics of one accounts service: one registry per app, so per replica process.

Every series carries the ``replica_id`` label; Prometheus adds the replicas up
(``sum without (replica_id, instance)``) where one total is wanted.
:class:`RequestLog` counts each answered request and logs it on one line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Receive, Scope, Send

from server.ledger import Account, Entry, Operation
from server.openings import Opening, OpeningRequest
from server.stores import Execution, LedgerStore, PositionedExecution, StorageUnavailable
from server.timing import RequestTimes

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Operation names as the request log spells them, and what a refused request's path is counted as.
_PATH_OPERATIONS: tuple[tuple[str, str], ...] = (
    ("/debit", "debit"),
    ("/credit", "credit"),
    ("/compensate_debit", "compensate_debit"),
    ("/compensate_credit", "compensate_credit"),
    ("/accounts/", "get_account"),
    ("/accounts", "list_accounts"),
    ("/transactions/", "get_transaction"),
    ("/healthz", "healthz"),
    ("/metrics", "metrics"),
    ("/openapi.json", "openapi"),
    ("/docs", "docs"),
    ("/redoc", "docs"),
    ("/static-docs/", "docs"),
    ("/docs-assets/", "docs"),
)
_KNOWN_OPERATIONS = frozenset(name for _, name in _PATH_OPERATIONS)

# Request latencies on loopback are a few milliseconds; a database under load takes longer.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

T = TypeVar("T")

request_log = logging.getLogger("server.requests")


def operation_label(name_or_path: str) -> str:
    """A bounded label for an operation: a route's name, or the operation a path names, else ``other``.

    Requests refused before routing are logged with their path, and an unknown
    path is any text: as a label it would make a new series per path.
    """
    if name_or_path in _KNOWN_OPERATIONS:
        return name_or_path
    for prefix, operation in _PATH_OPERATIONS:
        if name_or_path == prefix or (prefix.endswith("/") and name_or_path.startswith(prefix)):
            return operation
    return "other"


class ServiceMetrics:
    """The metrics of one accounts service process."""

    def __init__(self, replica_id: str | None) -> None:
        self.replica_id = replica_id or ""
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "accounts_requests",
            "Answered requests, by operation, HTTP status and problem code (empty for a success).",
            ["replica_id", "operation", "status", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "accounts_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by operation.",
            ["replica_id", "operation"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ledger_outcomes = Counter(
            "accounts_ledger_outcomes",
            "Ledger operations answered from the ledger: applied, reversed, voided, replayed, or rejected (with code).",
            ["replica_id", "operation", "outcome", "code"],
            registry=self.registry,
        )
        self.faults = Counter(
            "accounts_injected_faults",
            "Injected /credit faults: before_commit (nothing applied) or after_commit (applied, then 500).",
            ["replica_id", "when"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "accounts_store_errors",
            "Store calls that failed with the database unavailable (answered 503 storage_unavailable).",
            ["replica_id", "store", "call"],
            registry=self.registry,
        )
        self.store_latency = Histogram(
            "accounts_store_duration_seconds",
            "Time of one store call (one database transaction for a ledger operation), by store and call.",
            ["replica_id", "store", "call"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def request(self, operation: str, status: int, code: str) -> None:
        self.requests.labels(self.replica_id, operation_label(operation), str(status), code).inc()

    def ledger_outcome(self, entry: Entry, *, replayed: bool) -> None:
        if replayed:
            outcome, code = "replayed", entry.rejection or ""
        elif entry.rejection is not None:
            outcome, code = "rejected", entry.rejection
        else:
            outcome, code = str(entry.outcome), ""
        self.ledger_outcomes.labels(self.replica_id, entry.operation, outcome, code).inc()

    def injected_fault(self, when: str) -> None:
        self.faults.labels(self.replica_id, when).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


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


class LatencyMiddleware:
    """Times every HTTP request, from its arrival to the last byte of its answer."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            # The router leaves the matched route in the scope; a request
            # refused before routing is named by its path.
            route = scope.get("route")
            name = getattr(route, "name", None) or scope["path"]
            self.metrics.latency.labels(self.metrics.replica_id, operation_label(name)).observe(
                time.perf_counter() - started
            )


class MeasuredStore:
    """A store that times each call and counts the calls that found the database unavailable."""

    def __init__(self, store: LedgerStore, metrics: ServiceMetrics, kind: str, times: RequestTimes) -> None:
        self.store = store
        self.metrics = metrics
        self.kind = kind
        self.times = times
        self.ledger_id = store.ledger_id

    async def _measured(self, call: str, work: Callable[[], Awaitable[T]]) -> T:
        labels = (self.metrics.replica_id, self.kind, call)
        started = time.perf_counter_ns()
        try:
            return await work()
        except StorageUnavailable:
            self.metrics.store_errors.labels(*labels).inc()
            raise
        finally:
            elapsed = time.perf_counter_ns() - started
            self.times.add_store_time(elapsed)
            self.metrics.store_latency.labels(*labels).observe(elapsed / 1e9)

    async def execute(
        self, operation: Operation, transaction_id: str, user_id: str, amount: int, *, apply_new: bool = True
    ) -> Execution | None:
        return await self._measured(
            "execute", lambda: self.store.execute(operation, transaction_id, user_id, amount, apply_new=apply_new)
        )

    async def execute_with_position(
        self, operation: Operation, transaction_id: str, user_id: str, amount: int, *, apply_new: bool = True
    ) -> PositionedExecution:
        # The same call as execute, so the same series: one database transaction either way.
        return await self._measured(
            "execute",
            lambda: self.store.execute_with_position(operation, transaction_id, user_id, amount, apply_new=apply_new),
        )

    async def position(self) -> int:
        return await self._measured("position", self.store.position)

    async def balance(self, user_id: str) -> int | None:
        return await self._measured("balance", lambda: self.store.balance(user_id))

    async def accounts(self) -> list[Account]:
        return await self._measured("accounts", self.store.accounts)

    async def trail(self, transaction_id: str) -> list[Entry]:
        return await self._measured("trail", lambda: self.store.trail(transaction_id))

    async def balance_with_position(self, user_id: str) -> tuple[int | None, int]:
        return await self._measured("balance", lambda: self.store.balance_with_position(user_id))

    async def accounts_with_position(self) -> tuple[list[Account], int]:
        return await self._measured("accounts", self.store.accounts_with_position)

    async def trail_with_position(self, transaction_id: str) -> tuple[list[Entry], int]:
        return await self._measured("trail", lambda: self.store.trail_with_position(transaction_id))

    async def open_account(self, request: OpeningRequest) -> tuple[Opening, bool]:
        return await self._measured("open_account", lambda: self.store.open_account(request))

    async def opening(self, transaction_id: str) -> Opening | None:
        return await self._measured("trail", lambda: self.store.opening(transaction_id))

    async def close(self) -> None:
        await self.store.close()

    async def check_invariants(self) -> None:
        await self.store.check_invariants()


def store_kind(store: LedgerStore) -> str:
    """``memory``, ``sqlite`` or ``postgresql``: the store label, from the store's class."""
    name = type(store).__name__.removesuffix("Store").lower()
    return "postgresql" if name == "postgres" else name
