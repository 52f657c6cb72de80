"""What the saga log holds: one row per saga, and its history of events."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit

from saga.states import SagaState


def as_urls(urls: str | Iterable[str]) -> tuple[str, ...]:
    """One service's URLs as a tuple in the order given, without repeats.

    A str is one URL or several joined by commas, as on the command line, in
    the saga log and in :func:`service_id`: no service URL contains a comma.
    """
    return tuple(dict.fromkeys(urls.split(",") if isinstance(urls, str) else urls))


def service_id(urls: str | Iterable[str]) -> str:
    """The identity of the service behind ``urls``: the same whatever their order.

    Balances and audit trails are grouped by it, so that the replicas of one
    service count as one service. A single URL is its own identity.
    """
    return ",".join(sorted(as_urls(urls)))


_DEFAULT_PORTS = {"http": 80, "https": 443}


def comparable_url(url: str) -> str:
    """``url`` spelt one way for comparing: two spellings of one address compare equal.

    Lower-case scheme and host, the default port made explicit, no trailing
    slash, and every loopback name (``localhost``, ``127.0.0.1``, ``[::1]``)
    as one: a service on this machine answers on all of them alike. A URL
    that does not parse is compared as written.
    """
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").rstrip(".")
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return url
    if _loopback(host):
        host = "loopback"
    return f"{scheme}://{host}:{port}{parts.path.rstrip('/')}"


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True, init=False)
class AccountRef:
    """An account on one accounts service, which answers at any of ``urls``.

    Several URLs are replicas of the service over one database: the saga sends
    each request to one of them. ``AccountRef("http://a", "alice")`` is the
    one-URL form; a str may also hold several URLs, comma-separated.

    ``service`` is the service's name where the transfer named it (the
    transfers service takes names, never URLs): a process that drives the
    saga later sends to the URLs it knows for that name (see
    :mod:`saga.directory`), and to ``urls``, as logged, only if it knows none.
    """

    urls: tuple[str, ...]
    user_id: str
    service: str | None

    def __init__(self, urls: str | Iterable[str], user_id: str, service: str | None = None) -> None:
        object.__setattr__(self, "urls", as_urls(urls))
        object.__setattr__(self, "user_id", user_id)
        object.__setattr__(self, "service", service)

    @property
    def identity(self) -> tuple[str, ...]:
        """What makes two submissions name the same account: the service's name if it has one, else its URLs."""
        if self.service is not None:
            return ("service", self.service, self.user_id)
        return ("urls", *self.urls, self.user_id)

    @property
    def service_key(self) -> str:
        """How the log names the service for its ledger marks and quarantines: its name, else its URLs."""
        return self.service if self.service is not None else self.service_url

    @property
    def service_url(self) -> str:
        """The service's identity (see :func:`service_id`), not necessarily one URL to send to."""
        return service_id(self.urls)

    def same_service(self, other: AccountRef) -> bool:
        # Two services cannot share a URL, so one shared URL, however spelt, means one service.
        return not self.comparable_urls().isdisjoint(other.comparable_urls())

    def comparable_urls(self) -> frozenset[str]:
        """The service's URLs as :func:`comparable_url` spells them."""
        return frozenset(comparable_url(url) for url in self.urls)

    def same_account(self, other: AccountRef) -> bool:
        return self.user_id == other.user_id and self.same_service(other)

    def __str__(self) -> str:
        return f"{self.user_id}@{','.join(self.urls)}"


@dataclass(slots=True)
class SagaRecord:
    transaction_id: str
    source: AccountRef
    target: AccountRef
    amount: int
    state: SagaState = SagaState.PENDING
    #: True once a credit may have landed unseen: compensation must then void
    #: or reverse the credit before it gives the debit back.
    fence_credit: bool = False
    created_at_ms: int = 0
    updated_at_ms: int = 0
    attempts: int = 0
    last_error: str | None = None
    #: The lease (see saga.logs): who drives the saga now, under which epoch,
    #: and until when (ms, on the claimant's clock). The epoch rises with
    #: every claim; every commit of a driver is conditional on it.
    owner: str | None = None
    epoch: int = 0
    lease_expires_at_ms: int = 0
    #: The key a submitter gave, so that submitting again finds this saga.
    idempotency_key: str | None = None
    #: The name of the API caller that submitted it (see saga.service); None otherwise.
    submitted_by: str | None = None
    #: After this time (ms since the epoch) the saga sends no new forward request (see saga/workflow.py).
    deadline_ms: int | None = None
    #: Why the saga ended where it did, as a stable code (``insufficient_funds``,
    #: ``deadline_exceeded``, ``cancelled``, ``moved_by_hand``, ...); while COMPENSATING, why it compensates;
    #: None while it runs forward, and when it completed.
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request of one step, as it came back."""

    step: str
    number: int
    status: int | None
    code: str | None
    latency_us: int
    error: str | None = None
    #: Where the request went; None in logs written before a service could have several URLs.
    url: str | None = None
    #: The Ledger-Id the service answered with: the ledger that decided, or None without an answer.
    ledger_id: str | None = None
    #: When the request went out (ms since the epoch, on the run's clock): the time its history event
    #: carries, however much later the attempt was committed. None for an attempt made without a clock at
    #: hand, which the log stamps with its commit's time. Not part of what makes two records one attempt.
    sent_at_ms: int | None = field(default=None, compare=False)
    #: Microseconds this attempt waited for the saga log before it went out: the commit of what a recovery
    #: needs should the run die with it in flight. Measured in this run only; the log does not keep it.
    log_wait_us: int | None = field(default=None, compare=False)
    #: Microseconds the service says it spent on the request (``Server-Timing: total``), where it said so.
    #: Measured in this run only; the log does not keep it.
    server_us: int | None = field(default=None, compare=False)

    @property
    def succeeded(self) -> bool:
        return self.status == 200

    @property
    def client_us(self) -> int | None:
        """Microseconds of the request spent outside the service: the client stack and the network."""
        return None if self.server_us is None else max(0, self.latency_us - self.server_us)


class ActionKind(StrEnum):
    CANCEL = "cancel"
    RETRY = "retry"
    RESOLVE = "resolve"


class Resolution(StrEnum):
    """How an operator settled a NEEDS_ATTENTION saga."""

    #: The money was moved (or put back) by hand, outside the saga.
    MOVED_BY_HAND = "moved_by_hand"
    #: The trails show nothing left to move.
    NOTHING_TO_MOVE = "nothing_to_move"


@dataclass(frozen=True, slots=True)
class OperatorAction:
    """What a person did to one saga, by name, with the reason they gave: kept in its history for good."""

    transaction_id: str
    kind: ActionKind
    #: The operator token's name, or ``cli:USER@HOST``.
    actor: str
    reason: str
    at_ms: int
    resolution: Resolution | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a saga's history: a state change or an attempt."""

    transaction_id: str
    at_ms: int
    kind: str
    state: SagaState | None = None
    attempt: Attempt | None = None
    detail: str | None = None
    #: Who committed it, under which epoch; None in logs without leases and for unconditional commits.
    owner: str | None = None
    epoch: int | None = None
    #: For an ``action`` event: what the operator did.
    action: OperatorAction | None = None


@dataclass(slots=True)
class Change:
    """Everything one commit writes about one saga."""

    transaction_id: str
    at_ms: int
    state: SagaState | None = None
    fence_credit: bool | None = None
    attempts: list[Attempt] = field(default_factory=list)
    error: str | None = None
    #: The committer's epoch: the commit lands only while the saga is still at
    #: this epoch (else LeaseLost). None commits unconditionally, for a log
    #: that one process alone writes.
    epoch: int | None = None
    owner: str | None = None
    #: With a terminal state: why it ended there, as a stable code (SagaRecord.code).
    code: str | None = None
