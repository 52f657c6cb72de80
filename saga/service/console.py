"""The operator console at /ui/: what an operator looks at first, and the three actions, as plain HTML forms.

Why it is built this way:

- **HTML rendered on the server, no JavaScript.** Every page is a Jinja2
  template with autoescaping on, every action a plain form, and the only
  other file is a small stylesheet served from /ui/static/. Nothing is
  fetched from another host, so the console works wherever the service runs,
  however cut off, under ``Content-Security-Policy: default-src 'self'``.
- **The API's operations, not a second set.** The pages read the saga log
  (``overview``, ``by_account``, ``get``, ``history``) and act through
  :meth:`SagaLog.act` after :func:`saga.operator.check_action`, the call the
  API's ``POST /transfers/{id}/cancel|retry|resolve`` makes. Which forms a
  page offers is asked of saga/operator.py's own rule, not restated here.
- **The services' word beside the log's.** A transfer's page reads each
  accounts service's audit trail of its id and judges it with the
  reconciliation's judgment (saga/reconcile.py over saga/verify.py), so that
  an operator deciding how to settle a transfer sees what the money did.

Who may see and do what:

- Every page needs one of the service's tokens (``TokenBook``): an
  operator's may act, a caller's may only read. A browser enters its token
  once on /ui/sign-in and keeps it in a cookie (HttpOnly, SameSite=Strict,
  Path=/ui, Secure over https); a tool sends ``Authorization: Bearer``.
- A GET without either is a person's browser: it is sent (303) to the
  sign-in form. A wrong bearer token comes from a tool, which must be told:
  401. Any other request without credentials is 401 too.
- A service without tokens (loopback only) shows the console to everyone,
  read-only: no one holds an operator's token, so every action is 403.
- Every form carries a CSRF token, an HMAC of the credential under a key
  drawn when the process starts; a POST without the right one, or from
  another origin (``Origin``, ``Sec-Fetch-Site``), is 403 and records nothing.
- No token is written into a URL, a page or a log line: the request log
  names the person (``caller``), never the credential.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import functools
import hashlib
import hmac
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, ParamSpec
from urllib.parse import parse_qsl, quote

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.datastructures import MutableHeaders
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from generated_client.accounts import AuthenticatedClient, Client
from generated_client.accounts.api.accounts import get_transaction
from generated_client.accounts.models import Problem, TransactionTrail
from generated_client.accounts.types import Response as AccountsResponse
from saga.deadlines import iso_time
from saga.directory import ServiceDirectory
from saga.failures import LOG_FAILURES, one_line
from saga.logs import SagaLog
from saga.logs.base import RECENT_MS, UnknownSaga, past_deadline
from saga.operator import MAX_REASON_LENGTH, ActionRefused, check_action, decide
from saga.reconcile import judge_saga as judge_against_trails
from saga.records import AccountRef, ActionKind, OperatorAction, Resolution, SagaRecord
from saga.replicas import Replicas, describe, first_reachable
from saga.service.presenting import Presenter
from saga.service.settings import CONSOLE_PREFIX, Role, TokenBook, TransfersSettings
from saga.states import SagaState
from saga.telemetry.redact import redact
from saga.verify import TrailItem
from server.shared.contract_rules import TRANSACTION_ID

HERE: Final = Path(__file__).resolve().parent
TEMPLATES: Final = HERE / "templates"
STATIC: Final = HERE / "static"

#: The browser's credential: the token itself, base64url-encoded so that any token is a valid cookie value.
SESSION_COOKIE: Final = "saga_console"
#: What the last action did, shown once on the page the browser is sent back to.
FLASH_COOKIE: Final = "saga_console_flash"
FLASH_SECONDS: Final = 60
#: Sent with every answer under the console's prefix: pages, redirects, the stylesheet, refusals.
SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: How many stuck sagas the overview lists (the oldest), and how many matches a search.
STUCK_SHOWN: Final = 50
FOUND_SHOWN: Final = 100
MAX_QUERY_LENGTH: Final = 200
#: A console form has a handful of fields; more is not one of ours.
MAX_FORM_FIELDS: Final = 8
#: How long a page waits for an accounts service's trail before it shows it as unreadable.
TRAIL_TIMEOUT_SECONDS: Final = 2.0
FORM_MEDIA_TYPE: Final = "application/x-www-form-urlencoded"
_PAST_TENSE: Final[Mapping[ActionKind, str]] = {
    ActionKind.CANCEL: "Cancelled",
    ActionKind.RETRY: "Retry asked",
    ActionKind.RESOLVE: "Resolved",
}


# -- refusals -------------------------------------------------------------------------


class ConsoleRefusal(Exception):
    """A console request answered with a page that says why not: a status, a stable code and one line."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        viewer: Viewer | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.viewer = status, code, message, viewer
        self.headers = dict(headers or {})


class SignInFirst(Exception):
    """A browser that is not signed in asked for a page: it is sent to the sign-in form."""


# -- who is looking -------------------------------------------------------------------

Via = Literal["cookie", "bearer", "open"]


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who a console request comes from: a token's name and role; on a service without tokens, anyone."""

    name: str | None
    role: Role | None
    #: How the request proved it: the sign-in cookie, a bearer header, or nothing (a service without tokens).
    via: Via
    #: What this viewer's forms carry, and its POSTs must bring back (see :meth:`Gate.csrf_token`).
    csrf_token: str

    @property
    def may_act(self) -> bool:
        return self.role == "operator"


class Gate:
    """Tells who a console request comes from, checks that a form is the viewer's own, and signs browsers in."""

    def __init__(self, tokens: TokenBook, prefix: str) -> None:
        self._tokens = tokens
        #: The cookies' Path: the browser sends them to the console's pages, and to nothing else of the service.
        self.cookie_path = prefix
        # The same in every replica with the same tokens, so a form one replica rendered posts to any other.
        self._csrf_key = tokens.derived_key(b"saga-console-csrf-key")

    @property
    def open_to_all(self) -> bool:
        """Whether the service has no tokens at all, so that anyone may read and no one may act."""
        return not self._tokens

    def viewer(self, request: Request) -> Viewer:
        """The request's viewer; SignInFirst (a GET) or ConsoleRefusal 401 when it names no one."""
        if self.open_to_all:
            return Viewer(None, None, "open", self.csrf_token(b""))
        viewer = self._by_bearer(request) if "authorization" in request.headers else self.signed_in(request)
        if viewer is None:
            if request.method in ("GET", "HEAD"):
                raise SignInFirst
            raise ConsoleRefusal(401, "unauthorized", "sign in first: this page needs one of the service's tokens")
        request.state.caller = viewer.name
        return viewer

    def signed_in(self, request: Request) -> Viewer | None:
        """The viewer the request's sign-in cookie names, or None."""
        token = _token_from_cookie(request.cookies.get(SESSION_COOKIE))
        identified = None if token is None else self._tokens.identify(token)
        if token is None or identified is None:
            return None
        return Viewer(*identified, via="cookie", csrf_token=self.csrf_token(token))

    def _by_bearer(self, request: Request) -> Viewer:
        identified = self._tokens.bearer(request.scope["headers"])
        if identified is None:
            raise ConsoleRefusal(
                401,
                "unauthorized",
                "the Authorization header names no token of this service",
                headers={"WWW-Authenticate": "Bearer"},
            )
        # TokenBook.bearer accepts exactly one Authorization header: the credential is its value, as sent.
        credential = request.headers["authorization"].encode("latin-1")
        return Viewer(*identified, via="bearer", csrf_token=self.csrf_token(credential))

    def identify(self, token: str) -> tuple[str, Role] | None:
        """The (name, role) a token typed on the sign-in form stands for, or None."""
        return self._tokens.identify(token.encode()) if token else None

    def csrf_token(self, credential: bytes) -> str:
        """The token the forms of whoever holds ``credential`` carry: an HMAC of it, which tells nothing of it."""
        return hmac.new(self._csrf_key, b"saga-console-csrf\x00" + credential, hashlib.sha256).hexdigest()

    def check_form(self, request: Request, viewer: Viewer, fields: Mapping[str, str]) -> None:
        """ConsoleRefusal 403 unless the form came from this console's own page for this viewer."""
        refuse_cross_origin(request)
        presented = fields.get("csrf", "").encode()
        if not hmac.compare_digest(presented, viewer.csrf_token.encode()):
            raise ConsoleRefusal(
                403,
                "csrf_refused",
                "this form is not one this console gave you (it is stale, or came from elsewhere): "
                "reload the page and send it again; nothing was recorded",
                viewer,
            )

    def remember(self, response: Response, token: str, request: Request) -> None:
        """Keep ``token`` in the browser for the console's pages, out of reach of scripts and of other sites."""
        value = base64.urlsafe_b64encode(token.encode()).decode("ascii")
        self.set_cookie(response, request, SESSION_COOKIE, value)

    def forget(self, response: Response, request: Request) -> None:
        self.set_cookie(response, request, SESSION_COOKIE, "", max_age=0)

    def set_cookie(
        self, response: Response, request: Request, name: str, value: str, max_age: int | None = None
    ) -> None:
        """Every console cookie alike: HttpOnly, SameSite=Strict, Path=/ui, Secure over https."""
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=self.cookie_path,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )


def _token_from_cookie(value: str | None) -> bytes | None:
    if not value:
        return None
    try:
        return base64.urlsafe_b64decode(value.encode("ascii"))
    except (UnicodeEncodeError, binascii.Error):
        return None


def refuse_cross_origin(request: Request) -> None:
    """ConsoleRefusal 403 for a POST another site's page made, as the browser tells it (when it does).

    ``Sec-Fetch-Site``, which no page's script can set, must say same-origin
    (or none: the person's own doing). A real ``Origin`` must be this
    console's own. ``Origin: null`` is what a browser sends for a form posted
    from a page under ``Referrer-Policy: no-referrer`` (this console's), and
    what a sandboxed frame sends too: it passes only when Sec-Fetch-Site
    vouches for it.
    """
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.url.netloc}".lower()
    vouched_null = origin == "null" and site == "same-origin"
    if (site is not None and site not in ("same-origin", "none")) or (
        origin is not None and origin.lower() != own and not vouched_null
    ):
        raise ConsoleRefusal(
            403, "cross_origin_refused", "the console takes forms from its own pages only; nothing was recorded"
        )


async def read_form(request: Request) -> dict[str, str]:
    """The fields of an urlencoded form, each given once; ConsoleRefusal otherwise.

    Read here rather than by FastAPI's ``Form``: a console form is urlencoded,
    and that needs no multipart parser. The body is already capped by the
    service's RequestGuardMiddleware.
    """
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != FORM_MEDIA_TYPE:
        raise ConsoleRefusal(415, "invalid_request", f"a console form is sent as {FORM_MEDIA_TYPE}")
    try:
        text = (await request.body()).decode("ascii")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, errors="strict")
    except ValueError:  # UnicodeDecodeError included
        raise ConsoleRefusal(422, "invalid_request", "the form cannot be read as UTF-8 fields") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise ConsoleRefusal(422, "invalid_request", f"the form gives the field {name!r} twice")
        fields[name] = value
    return fields


# -- the services' audit trails -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrailLine:
    """One operation an accounts service recorded under the transfer's id."""

    operation: str
    user_id: str
    amount: int
    status: int
    #: applied, reversed or voided; None for a recorded rejection.
    outcome: str | None
    code: str | None

    def as_item(self) -> TrailItem:
        return TrailItem(self.operation, self.user_id, self.amount, self.outcome)


@dataclass(frozen=True, slots=True)
class TrailReading:
    """What one accounts service says of the transfer; ``unreadable`` says why it could not be asked."""

    service: str
    #: The transfer's side at that service, with the URLs this process knows for it.
    account: AccountRef
    lines: tuple[TrailLine, ...] = ()
    unreadable: str | None = None


class TrailReader:
    """Reads a transfer's audit trail at each of its services (``GET /transactions/{id}``), briefly.

    Through the generated accounts client with the accounts services' token,
    each read within ``timeout_seconds``: a service that is down or slow is
    shown as unreadable, never turned into an error page.
    """

    def __init__(
        self,
        directory: ServiceDirectory,
        present: Presenter,
        bank_token: str | None,
        *,
        timeout_seconds: float = TRAIL_TIMEOUT_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._directory = directory
        self._present = present
        self._bank_token = bank_token
        self._timeout = timeout_seconds
        self._httpx_args: dict[str, Any] = {} if transport is None else {"transport": transport}
        self._replicas = Replicas()

    def resolved(self, record: SagaRecord) -> SagaRecord:
        """``record`` with the URLs this process knows for each side's service, as the reconciliation reads it."""
        return dataclasses.replace(
            record, source=self._directory.resolve(record.source), target=self._directory.resolve(record.target)
        )

    async def read_all(self, record: SagaRecord) -> list[TrailReading]:
        """Each service the transfer touched, read once and all at once."""
        services: dict[str, AccountRef] = {}
        for account in (record.source, record.target):
            resolved = self._directory.resolve(account)
            services.setdefault(resolved.service_url, resolved)
        reads = (self.read(account, record.transaction_id) for account in services.values())
        return list(await asyncio.gather(*reads))

    async def read(self, account: AccountRef, transaction_id: str) -> TrailReading:
        service = service_shown(self._present, account)
        try:
            async with asyncio.timeout(self._timeout):
                answer = await first_reachable(account.urls, self._replicas, lambda url: self._get(url, transaction_id))
        except TimeoutError:
            return TrailReading(service, account, unreadable=f"no answer within {self._timeout:g} s")
        except Exception as error:  # whatever a service does, the page shows it as unreadable
            return TrailReading(service, account, unreadable=describe(error))
        trail = answer.parsed
        if not isinstance(trail, TransactionTrail):
            detail = trail.detail if isinstance(trail, Problem) else "no readable answer"
            return TrailReading(service, account, unreadable=f"it answered {int(answer.status_code)}: {detail}")
        lines = tuple(
            TrailLine(
                entry.operation.value,
                entry.user_id,
                entry.amount,
                entry.status.value,
                entry.outcome.value if isinstance(entry.outcome, str) else None,
                entry.code.value if isinstance(entry.code, str) else None,
            )
            for entry in trail.entries
        )
        return TrailReading(service, account, lines)

    async def _get(self, url: str, transaction_id: str) -> AccountsResponse[Problem | TransactionTrail]:
        async with self._client(url) as client:
            return await get_transaction.asyncio_detailed(
                transaction_id, client=client, transaction_id_header=f"console-{uuid.uuid4()}"
            )

    def _client(self, url: str) -> Client | AuthenticatedClient:
        timeout = httpx.Timeout(self._timeout)
        if self._bank_token:
            return AuthenticatedClient(
                base_url=url, token=self._bank_token, timeout=timeout, httpx_args=self._httpx_args
            )
        return Client(base_url=url, timeout=timeout, httpx_args=self._httpx_args)


def service_shown(present: Presenter, account: AccountRef) -> str:
    """A side's service by name where the directory knows it, else by its logged URLs, without credentials."""
    return present.service_name(account) or redact(account.service_url)


Word = Literal["agree", "disagree", "cannot tell"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the services' trails agree with how the log says the transfer ended, and why (or why not known)."""

    word: Word
    because: tuple[str, ...] = ()


def judge(record: SagaRecord, readings: Sequence[TrailReading]) -> Verdict:
    """The reconciliation's judgment of one transfer (``record`` as :meth:`TrailReader.resolved` gives it).

    It judges a transfer that ended by itself or was cancelled; one that has
    not ended, whose trails could not all be read, or whose ledger changed
    under it (NEEDS_ATTENTION, or RESOLVED by hand since) cannot be told.
    """
    if not record.state.is_terminal:
        return Verdict("cannot tell", ("the transfer has not ended: its trails may still change",))
    unread = tuple(f"the trail at {r.service} cannot be read: {r.unreadable}" for r in readings if r.unreadable)
    if unread:
        return Verdict("cannot tell", unread)
    if record.state is SagaState.NEEDS_ATTENTION:
        return Verdict("cannot tell", ("a service's ledger changed under this transfer: an operator decides",))
    if record.state is SagaState.RESOLVED:
        settled = f"settled by hand ({record.code or 'resolved'}): the reconciliation does not judge it"
        return Verdict("cannot tell", (settled,))
    trails = {reading.account.service_url: [line.as_item() for line in reading.lines] for reading in readings}
    # A finding quotes the accounts as logged: their URLs go out without credentials.
    disagreements = tuple(redact(finding.line()) for finding in judge_against_trails(record, trails))
    return Verdict("disagree", disagreements) if disagreements else Verdict("agree")


# -- what the pages show --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StuckLine:
    """One row of the overview's stuck list: the saga, as the API shows it, its age and why it is listed."""

    record: SagaRecord
    shown: Mapping[str, Any]
    age_ms: int
    why: tuple[str, ...]


def stuck_reasons(record: SagaRecord, at_ms: int, stuck_after_ms: int) -> tuple[str, ...]:
    """Why an overview lists ``record`` as stuck, in words (the list itself is the log's, see Overview.stuck)."""
    reasons = []
    if record.state is SagaState.NEEDS_ATTENTION:
        reasons.append("waits for an operator")
    if record.state is SagaState.COMPENSATING and record.created_at_ms <= at_ms - stuck_after_ms:
        reasons.append("compensating too long")
    if past_deadline(record, at_ms):
        reasons.append("past its deadline")
    return tuple(reasons)


def allowed_actions(record: SagaRecord) -> list[ActionKind]:
    """The actions saga/operator.py lets an operator take on ``record`` now (the log decides again when one comes)."""
    return [kind for kind in ActionKind if _allows(record, kind)]


def _allows(record: SagaRecord, kind: ActionKind) -> bool:
    resolution = Resolution.NOTHING_TO_MOVE if kind is ActionKind.RESOLVE else None
    probe = OperatorAction(record.transaction_id, kind, "console", "would it apply?", 0, resolution)
    try:
        decide(record, probe)
    except ActionRefused:
        return False
    return True


def parse_account(query: str) -> tuple[str | None, str]:
    """(service, user_id) from ``user_id`` or ``SERVICE:user_id``: neither a user id nor a service name has a colon."""
    service, colon, user_id = query.rpartition(":")
    return (service or None, user_id) if colon else (None, query)


def describe_age(ms: int) -> str:
    """A duration as a person reads it: ``42 s``, ``3 min 05 s``, ``2 h 10 min``, ``4 d 3 h``."""
    seconds = max(ms, 0) // 1000
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


@dataclass(frozen=True, slots=True)
class FormProblem:
    """Why an action's form was not taken: shown beside that form, with what was typed."""

    kind: ActionKind
    code: str
    message: str
    reason: str


P = ParamSpec("P")


def log_failures_shown(handler: Callable[P, Awaitable[Response]]) -> Callable[P, Awaitable[Response]]:
    """A page whose read or write of the log failed says so (503), as the API does, rather than a bare 500."""

    @functools.wraps(handler)
    async def answering(*args: P.args, **kwargs: P.kwargs) -> Response:
        try:
            return await handler(*args, **kwargs)
        except LOG_FAILURES as error:
            # The detail may quote the log's URL: without its credentials.
            detail = f"the saga log is unavailable ({redact(one_line(error))}); reload the page later"
            raise ConsoleRefusal(503, "log_unavailable", detail) from None

    return answering


# -- the pages ------------------------------------------------------------------------


class Console:
    """The console's route handlers: each reads who is looking, asks the log, and renders one template."""

    def __init__(
        self,
        *,
        settings: TransfersSettings,
        log: SagaLog,
        present: Presenter,
        now_ms: Callable[[], int],
        gate: Gate,
        trails: TrailReader,
        templates: Environment,
        prefix: str,
    ) -> None:
        self.settings = settings
        self.log = log
        self.present = present
        self.now_ms = now_ms
        self.gate = gate
        self.trails = trails
        self.templates = templates
        self.prefix = prefix

    @property
    def stuck_after_ms(self) -> int:
        return self.settings.stuck_after_seconds * 1000

    def page(self, template: str, viewer: Viewer | None, status: int = 200, **context: Any) -> HTMLResponse:
        # The search box shows what was searched, on the results page alone.
        context = {"query": "", **context, "viewer": viewer, "open_to_all": self.gate.open_to_all}
        html = self.templates.get_template(template).render(context)
        return HTMLResponse(html, status_code=status)

    def transfer_url(self, transaction_id: str) -> str:
        return f"{self.prefix}/transfers/{quote(transaction_id, safe='')}"

    # -- reading

    @log_failures_shown
    async def overview(self, request: Request) -> Response:
        viewer = self.gate.viewer(request)
        overview = await self.log.overview(now_ms=self.now_ms(), stuck_after_ms=self.stuck_after_ms, limit=STUCK_SHOWN)
        actions = await self.log.action_counts()
        stuck = [
            StuckLine(
                record,
                self.present.transfer(record),
                overview.at_ms - record.created_at_ms,
                stuck_reasons(record, overview.at_ms, self.stuck_after_ms),
            )
            for record in overview.stuck
        ]
        return self.page(
            "overview.html",
            viewer,
            overview=overview,
            counts=[(state, overview.counts.get(state, 0)) for state in SagaState],
            total=sum(overview.counts.values()),
            stuck=stuck,
            stuck_shown=STUCK_SHOWN,
            actions=[(kind, actions.get(kind.value, 0)) for kind in ActionKind],
            stuck_after_seconds=self.settings.stuck_after_seconds,
            recent_minutes=RECENT_MS // 60_000,
        )

    @log_failures_shown
    async def search(self, request: Request, q: str = "") -> Response:
        viewer = self.gate.viewer(request)
        query = q.strip()
        if not query or len(query) > MAX_QUERY_LENGTH:
            problem = f"a search is at most {MAX_QUERY_LENGTH} characters" if query else None
            return self.page("search.html", viewer, 422 if problem else 200, searched=None, problem=problem)
        by_id = await self.log.get(query)
        service, user_id = parse_account(query)
        by_account = await self.log.by_account(user_id, service=service, limit=FOUND_SHOWN)
        return self.page(
            "search.html",
            viewer,
            query=query,
            searched=query,
            problem=None,
            by_id=by_id,
            service=service,
            user_id=user_id,
            by_account=by_account,
            found_shown=FOUND_SHOWN,
        )

    @log_failures_shown
    async def transfer(self, request: Request, transaction_id: str) -> Response:
        viewer = self.gate.viewer(request)
        record = await self._record(request, transaction_id, viewer)
        flash = _flash(request.cookies.get(FLASH_COOKIE))
        response = await self._transfer_page(viewer, record, flash=flash)
        if flash is not None:
            self.gate.set_cookie(response, request, FLASH_COOKIE, "", max_age=0)
        return response

    async def _record(self, request: Request, transaction_id: str, viewer: Viewer) -> SagaRecord:
        request.state.transaction_id = transaction_id
        record = await self.log.get(transaction_id) if TRANSACTION_ID.fullmatch(transaction_id) else None
        if record is None:
            raise ConsoleRefusal(404, "unknown_transfer", f"no transfer has the id {transaction_id!r}", viewer)
        return record

    async def _transfer_page(
        self,
        viewer: Viewer,
        record: SagaRecord,
        *,
        status: int = 200,
        flash: str | None = None,
        form_problem: FormProblem | None = None,
    ) -> HTMLResponse:
        history, readings = await asyncio.gather(self.log.history(record.transaction_id), self.trails.read_all(record))
        return self.page(
            "transfer.html",
            viewer,
            status,
            record=record,
            shown=self.present.transfer(record),
            timeline=[(event, self.present.event(record, event)) for event in history],
            readings=readings,
            verdict=judge(self.trails.resolved(record), readings),
            actions=allowed_actions(record) if viewer.may_act else [],
            resolutions=list(Resolution),
            max_reason_length=MAX_REASON_LENGTH,
            flash=flash,
            form_problem=form_problem,
        )

    # -- acting

    @log_failures_shown
    async def act(self, request: Request, transaction_id: str, action: str) -> Response:
        viewer = self.gate.viewer(request)
        kind = _action_kind(action, viewer)
        actor = _operator_name(viewer)
        fields = await read_form(request)
        self.gate.check_form(request, viewer, fields)
        record = await self._record(request, transaction_id, viewer)
        reason = fields.get("reason", "")
        try:
            operator_action = OperatorAction(
                transaction_id, kind, actor, reason, self.now_ms(), _resolution(kind, fields.get("resolution"))
            )
            check_action(operator_action)
        except ValueError as error:
            problem = FormProblem(kind, "invalid_request", str(error), reason)
            return await self._refused(request, viewer, record, 422, problem)
        try:
            # The very call the API's POST /transfers/{id}/{action} makes.
            await self.log.act(operator_action)
        except UnknownSaga:
            raise ConsoleRefusal(
                404, "unknown_transfer", f"no transfer has the id {transaction_id!r}", viewer
            ) from None
        except ActionRefused as refused:
            now = await self._record(request, transaction_id, viewer)
            return await self._refused(
                request, viewer, now, 409, FormProblem(kind, refused.code, refused.detail, reason)
            )
        response = RedirectResponse(self.transfer_url(transaction_id), status_code=303)
        self.gate.set_cookie(response, request, FLASH_COOKIE, kind.value, max_age=FLASH_SECONDS)
        return response

    async def _refused(
        self, request: Request, viewer: Viewer, record: SagaRecord, status: int, problem: FormProblem
    ) -> Response:
        request.state.problem_code = problem.code
        return await self._transfer_page(viewer, record, status=status, form_problem=problem)

    # -- signing in and out

    async def sign_in_form(self, request: Request) -> Response:
        return self.page("sign_in.html", self.gate.signed_in(request), problem=None)

    async def sign_in(self, request: Request) -> Response:
        refuse_cross_origin(request)
        token = (await read_form(request)).get("token", "")
        identified = self.gate.identify(token)
        if identified is None:
            request.state.problem_code = "unauthorized"
            # The form is shown empty again: what was typed is never sent back.
            return self.page("sign_in.html", None, 401, problem="that is not a token of this service")
        request.state.caller = identified[0]
        response = RedirectResponse(f"{self.prefix}/", status_code=303)
        self.gate.remember(response, token, request)
        return response

    async def sign_out(self, request: Request) -> Response:
        fields = await read_form(request)
        viewer = self.gate.signed_in(request)
        if viewer is not None:
            self.gate.check_form(request, viewer, fields)
        response = RedirectResponse(f"{self.prefix}/sign-in", status_code=303)
        self.gate.forget(response, request)
        return response

    async def to_overview(self, request: Request) -> Response:
        return RedirectResponse(f"{self.prefix}/", status_code=303)

    async def not_found(self, request: Request) -> Response:
        raise ConsoleRefusal(404, "not_found", "the console has no such page")

    # -- refusals, as pages

    async def on_refusal(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ConsoleRefusal)
        request.state.problem_code = exc.code
        response = self.page(
            "refusal.html", exc.viewer, exc.status, answered=exc.status, code=exc.code, message=exc.message
        )
        response.headers.update(exc.headers)
        return response

    async def on_sign_in_first(self, request: Request, exc: Exception) -> Response:
        response = RedirectResponse(f"{self.prefix}/sign-in", status_code=303)
        if SESSION_COOKIE in request.cookies:
            # A cookie of a token this service no longer has: drop it.
            self.gate.forget(response, request)
        return response


def _action_kind(action: str, viewer: Viewer) -> ActionKind:
    try:
        return ActionKind(action)
    except ValueError:
        raise ConsoleRefusal(404, "not_found", "the console has no such action", viewer) from None


def _operator_name(viewer: Viewer) -> str:
    """The name an action is recorded under; ConsoleRefusal 403 for anyone who is not an operator."""
    if viewer.may_act and viewer.name is not None:
        return viewer.name
    if viewer.via == "open":
        why = "this service has no operator tokens, so its console is read-only"
    else:
        why = f"{viewer.name} is a caller: only an operator may cancel, retry or resolve"
    raise ConsoleRefusal(403, "operator_only", f"{why}; nothing was recorded", viewer)


def _resolution(kind: ActionKind, value: str | None) -> Resolution | None:
    """The resolution a resolve form chose (ValueError if none of ours); None for the other actions."""
    if kind is not ActionKind.RESOLVE:
        return None
    try:
        return Resolution(value or "")
    except ValueError:
        choices = " or ".join(resolution.value for resolution in Resolution)
        raise ValueError(f"choose how the transfer was settled: {choices}") from None


def _flash(value: str | None) -> str | None:
    """What the last action did, from its cookie: only one of our fixed lines, whatever the cookie holds."""
    try:
        kind = ActionKind(value or "")
    except ValueError:
        return None
    return f"{_PAST_TENSE[kind]}: recorded in the transfer's history."


# -- wiring ---------------------------------------------------------------------------


class ConsoleHeaders:
    """Adds SECURITY_HEADERS to every answer under the console's prefix, whatever produced it."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == self.prefix or path.startswith(self.prefix + "/")):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)


def console_templates(iso_time: Callable[[int], str], present: Presenter, prefix: str) -> Environment:
    """The templates, escaping everything they are given: no user data is ever marked safe."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["iso_time"] = iso_time
    environment.filters["age"] = describe_age
    environment.filters["service_of"] = functools.partial(service_shown, present)
    environment.filters["redact"] = redact
    environment.filters["path_segment"] = lambda text: quote(str(text), safe="")
    environment.filters["minor_units"] = lambda amount: f"{amount:,}"
    environment.globals["prefix"] = prefix
    return environment


def add_routes(app: FastAPI, console: Console, prefix: str) -> None:
    """Every console route, in the order the router tries them: the catch-all last."""
    page: dict[str, Any] = {"include_in_schema": False, "response_class": HTMLResponse}
    app.add_api_route(prefix, console.to_overview, methods=["GET"], name="consoleHome", **page)
    app.add_api_route(f"{prefix}/", console.overview, methods=["GET"], name="consoleOverview", **page)
    app.add_api_route(f"{prefix}/search", console.search, methods=["GET"], name="consoleSearch", **page)
    transfer = f"{prefix}/transfers/{{transaction_id}}"
    app.add_api_route(transfer, console.transfer, methods=["GET"], name="consoleTransfer", **page)
    app.add_api_route(f"{transfer}/{{action}}", console.act, methods=["POST"], name="consoleAct", **page)
    app.add_api_route(f"{prefix}/sign-in", console.sign_in_form, methods=["GET"], name="consoleSignInForm", **page)
    app.add_api_route(f"{prefix}/sign-in", console.sign_in, methods=["POST"], name="consoleSignIn", **page)
    app.add_api_route(f"{prefix}/sign-out", console.sign_out, methods=["POST"], name="consoleSignOut", **page)
    app.mount(f"{prefix}/static", StaticFiles(directory=STATIC), name="consoleStatic")
    app.add_api_route(
        f"{prefix}/{{rest:path}}", console.not_found, methods=["GET", "POST"], name="consoleNotFound", **page
    )


def add_console(
    app: FastAPI,
    *,
    settings: TransfersSettings,
    log: SagaLog,
    present: Presenter,
    now_ms: Callable[[], int],
    tokens: TokenBook,
) -> None:
    """Add the console's routes under /ui/ to ``app``; the app wraps itself in ConsoleHeaders, outermost."""
    console = Console(
        settings=settings,
        log=log,
        present=present,
        now_ms=now_ms,
        gate=Gate(tokens, CONSOLE_PREFIX),
        trails=TrailReader(settings.directory, present, settings.bank_token),
        templates=console_templates(iso_time, present, CONSOLE_PREFIX),
        prefix=CONSOLE_PREFIX,
    )
    add_routes(app, console, CONSOLE_PREFIX)
    app.add_exception_handler(ConsoleRefusal, console.on_refusal)
    app.add_exception_handler(SignInFirst, console.on_sign_in_first)
