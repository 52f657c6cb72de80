"""The operator console at /ui/, in process over a memory saga log: who may see and do what, and what each page says.

The app is the service's own (create_transfers_app); its accounts services
are loopback ports held bound but not listening, so that every trail read
is refused at once. The trail reads and the verdict against live answers
are tested on a stand-in transport at the end.
"""

from __future__ import annotations

import html
import json
import logging
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from saga.directory import ServiceDirectory
from saga.logs import MemorySagaLog, SagaLogError
from saga.logs.base import Overview
from saga.records import AccountRef, ActionKind, Attempt, Change, OperatorAction, Resolution, SagaRecord
from saga.service import TransfersSettings, create_transfers_app
from saga.service.console import (
    SECURITY_HEADERS,
    SESSION_COOKIE,
    TrailReader,
    describe_age,
    judge,
    parse_account,
)
from saga.service.presenting import Presenter
from saga.states import SagaState
from tests.support.aio import run

NOW = 1_800_000_000_000
OPERATOR_TOKEN = "olga-operator-token-5f2c"
CALLER_TOKEN = "shop-caller-token-91ab"
SCRIPT = "<script>alert(1)</script>"
ESCAPED_SCRIPT = html.escape(SCRIPT, quote=False)
STUCK_AFTER_SECONDS = 60


@pytest.fixture
def silent_ports() -> Iterator[tuple[str, str]]:
    """Two loopback URLs where nothing answers: ports held bound, never listened on, so a connect fails at once."""
    held = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(2)]
    try:
        for sock in held:
            sock.bind(("127.0.0.1", 0))
        first, second = (f"http://127.0.0.1:{sock.getsockname()[1]}" for sock in held)
        yield first, second
    finally:
        for sock in held:
            sock.close()


def directory_of(urls: tuple[str, str]) -> ServiceDirectory:
    return ServiceDirectory({"bank-a": (urls[0],), "bank-b": (urls[1],)})


@asynccontextmanager
async def console(
    urls: tuple[str, str],
    log: MemorySagaLog,
    *,
    operators: dict[str, str] | None = None,
    callers: dict[str, str] | None = None,
    base_url: str = "http://console.test",
) -> AsyncIterator[httpx.AsyncClient]:
    """The service's app with its console; by default olga is an operator and shop a caller."""
    settings = TransfersSettings(
        directory=directory_of(urls),
        api_tokens={"shop": CALLER_TOKEN} if callers is None else callers,
        operator_tokens={"olga": OPERATOR_TOKEN} if operators is None else operators,
        stuck_after_seconds=STUCK_AFTER_SECONDS,
    )
    app = create_transfers_app(settings, log, clock_ms=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as client:
        yield client


async def signed_in(client: httpx.AsyncClient, token: str) -> None:
    answer = await client.post("/ui/sign-in", data={"token": token})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui/"


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


def metric(page: str, name: str) -> str:
    found = re.search(rf'data-metric="{name}">\s*([^<]*?)\s*<', page)
    assert found is not None, f"the page shows no {name}"
    return found.group(1)


def state_count(page: str, state: str) -> int:
    found = re.search(rf'data-state="{state}">(\d+)<', page)
    assert found is not None, f"the page shows no count for {state}"
    return int(found.group(1))


async def saga_in(
    log: MemorySagaLog,
    urls: tuple[str, str],
    transaction_id: str,
    state: SagaState,
    *,
    created_ms: int = NOW - 10_000,
    ended_ms: int | None = None,
    error: str | None = None,
    source_user: str = "alice",
    target_user: str = "bob",
    deadline_ms: int | None = None,
) -> None:
    """A saga created PENDING and, unless it stays so, moved to ``state`` by a run that claimed it (epoch 1)."""
    directory = directory_of(urls)
    claimed = state is not SagaState.PENDING
    record = SagaRecord(
        transaction_id,
        directory.account("bank-a", source_user),
        directory.account("bank-b", target_user),
        2_500,
        created_at_ms=created_ms,
        updated_at_ms=created_ms,
        epoch=1 if claimed else 0,
        deadline_ms=deadline_ms,
    )
    await log.create(record, SagaState.PENDING)
    if claimed:
        await log.commit(Change(transaction_id, ended_ms or created_ms + 1_000, state, error=error))


async def history_length(log: MemorySagaLog, transaction_id: str) -> int:
    return len(await log.history(transaction_id))


Scenario = Callable[[httpx.AsyncClient, MemorySagaLog], Awaitable[None]]


def with_console(urls: tuple[str, str], scenario: Scenario, **options: Any) -> None:
    async def main() -> None:
        log = MemorySagaLog(exclusive=True)
        async with console(urls, log, **options) as client:
            await scenario(client, log)

    run(main())


# -- signing in ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ui/", "/ui/search?q=alice", "/ui/transfers/t-1"])
def test_a_page_without_credentials_sends_the_browser_to_sign_in(silent_ports: tuple[str, str], path: str) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        answer = await client.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/sign-in"

    with_console(silent_ports, scenario)


def test_signing_in_keeps_the_token_in_an_http_only_strict_cookie_for_the_console_alone(
    silent_ports: tuple[str, str],
) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        form = await client.get("/ui/sign-in")
        assert form.status_code == 200
        assert 'type="password"' in form.text
        answer = await client.post("/ui/sign-in", data={"token": OPERATOR_TOKEN})
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "path", "samesite"} <= attributes
        assert "Path=/ui;" in cookie or cookie.endswith("Path=/ui")
        assert "SameSite=strict" in cookie
        assert "secure" not in attributes, "plain http: a Secure cookie would never come back"
        assert "Max-Age" not in cookie, "a session cookie: gone when the browser closes"
        assert OPERATOR_TOKEN not in cookie, "the cookie holds the token encoded, as any cookie value must be"
        overview = await client.get("/ui/")
        assert overview.status_code == 200
        assert '<span class="name">olga</span> <span class="role">operator</span>' in overview.text

    with_console(silent_ports, scenario)


def test_over_https_the_sign_in_cookie_is_secure(silent_ports: tuple[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        answer = await client.post("/ui/sign-in", data={"token": OPERATOR_TOKEN})
        assert answer.status_code == 303
        assert "; secure" in answer.headers["set-cookie"].lower()

    with_console(silent_ports, scenario, base_url="https://console.test")


@pytest.mark.parametrize("typed", ["not-a-token", "", OPERATOR_TOKEN + "x", f"<b>{SCRIPT}"])
def test_a_wrong_token_is_401_and_the_form_never_shows_it_again(silent_ports: tuple[str, str], typed: str) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        answer = await client.post("/ui/sign-in", data={"token": typed})
        assert answer.status_code == 401
        assert "set-cookie" not in answer.headers
        assert "that is not a token of this service" in answer.text
        if typed:
            assert typed not in answer.text
            assert html.escape(typed) not in answer.text
        assert re.search(r'<input id="token"[^>]*value=', answer.text) is None

    with_console(silent_ports, scenario)


def test_a_bearer_token_reads_the_console_without_a_cookie(silent_ports: tuple[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, silent_ports, "t-1", SagaState.COMPLETED)
        bearer = {"Authorization": f"Bearer {CALLER_TOKEN}"}
        for path in ("/ui/", "/ui/search?q=t-1", "/ui/transfers/t-1"):
            answer = await client.get(path, headers=bearer)
            assert answer.status_code == 200, path
            assert '<span class="name">shop</span> <span class="role">caller</span>' in answer.text
            assert "Sign out" not in answer.text, "nothing to sign out of: the tool sends its token each time"

    with_console(silent_ports, scenario)


@pytest.mark.parametrize("authorization", ["Bearer nope", "Basic b2xnYTpzZWNyZXQ=", f"Bearer {OPERATOR_TOKEN}x"])
def test_a_wrong_bearer_token_is_401_and_not_sent_to_sign_in(silent_ports: tuple[str, str], authorization: str) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        answer = await client.get("/ui/", headers={"Authorization": authorization})
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "unauthorized" in answer.text

    with_console(silent_ports, scenario)


def test_signing_out_forgets_the_cookie(silent_ports: tuple[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await signed_in(client, OPERATOR_TOKEN)
        overview = await client.get("/ui/")
        answer = await client.post("/ui/sign-out", data={"csrf": csrf_of(overview.text)})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/sign-in"
        assert answer.headers["set-cookie"].startswith(f'{SESSION_COOKIE}=""; ')
        assert "Max-Age=0" in answer.headers["set-cookie"]
        assert (await client.get("/ui/")).status_code == 303

    with_console(silent_ports, scenario)


def test_tokens_never_reach_the_request_log(silent_ports: tuple[str, str], caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, silent_ports, "t-1", SagaState.NEEDS_ATTENTION)
        await client.post("/ui/sign-in", data={"token": "wrong-" + OPERATOR_TOKEN})
        await signed_in(client, OPERATOR_TOKEN)
        page = await client.get("/ui/transfers/t-1")
        await client.post("/ui/transfers/t-1/retry", data={"csrf": csrf_of(page.text), "reason": "try"})
        await client.get("/ui/", headers={"Authorization": f"Bearer {CALLER_TOKEN}"})

    with caplog.at_level(logging.INFO, logger="saga.api"):
        with_console(silent_ports, scenario)
    lines = [json.dumps(getattr(record, "fields", {})) + record.getMessage() for record in caplog.records]
    assert any('"caller": "olga"' in line for line in lines), "the request log names who acted"
    for line in lines:
        assert OPERATOR_TOKEN not in line
        assert CALLER_TOKEN not in line


# -- acting, and who may ------------------------------------------------------------------


def test_an_operator_resolves_and_the_timeline_shows_who_when_what_and_why(silent_ports: tuple[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, silent_ports, "t-1", SagaState.NEEDS_ATTENTION, error="bank-b forgot the credit")
        await signed_in(client, OPERATOR_TOKEN)
        page = await client.get("/ui/transfers/t-1")
        answer = await client.post(
            "/ui/transfers/t-1/resolve",
            data={"csrf": csrf_of(page.text), "resolution": "moved_by_hand", "reason": "credited bob by hand, #4411"},
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/transfers/t-1"
        record = await log.get("t-1")
        assert record is not None
        assert record.state is SagaState.RESOLVED
        assert record.code == "moved_by_hand"
        action = (await log.history("t-1"))[-1].action
        assert action == OperatorAction(
            "t-1", ActionKind.RESOLVE, "olga", "credited bob by hand, #4411", NOW, Resolution.MOVED_BY_HAND
        )

        after = await client.get("/ui/transfers/t-1")
        assert "Resolved: recorded in the transfer&#39;s history." in after.text
        row = re.search(r'<tr class="event-action">(.*?)</tr>', after.text, re.DOTALL)
        assert row is not None
        assert "<time>2027-01-15T08:00:00.000Z</time>" in row.group(1)
        assert "<strong>resolve</strong>" in row.group(1)
        assert "RESOLVED" in row.group(1)
        assert '<q class="reason">credited bob by hand, #4411</q>' in row.group(1)
        assert "<code>moved_by_hand</code>" in row.group(1)
        assert '<td class="actor">olga</td>' in row.group(1)
        again = await client.get("/ui/transfers/t-1")
        assert "Resolved: recorded" not in again.text, "the outcome is shown once"

    with_console(silent_ports, scenario)


def test_an_operator_cancels_a_transfer_no_run_took_up_and_retries_a_compensation(
    silent_ports: tuple[str, str],
) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, silent_ports, "waiting", SagaState.PENDING)
        await saga_in(log, silent_ports, "compensating", SagaState.COMPENSATING)
        await signed_in(client, OPERATOR_TOKEN)
        for transaction_id, action in (("waiting", "cancel"), ("compensating", "retry")):
            page = await client.get(f"/ui/transfers/{transaction_id}")
            answer = await client.post(
                f"/ui/transfers/{transaction_id}/{action}", data={"csrf": csrf_of(page.text), "reason": "asked"}
            )
            assert answer.status_code == 303, answer.text
        assert (await log.states(["waiting", "compensating"])) == {
            "waiting": SagaState.CANCELLED,
            "compensating": SagaState.COMPENSATING,
        }
        assert await log.action_counts() == {"cancel": 1, "retry": 1}

    with_console(silent_ports, scenario)


def test_a_caller_reads_but_may_not_act_and_nothing_is_recorded(silent_ports: tuple[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, silent_ports, "t-1", SagaState.NEEDS_ATTENTION)
        await signed_in(client, CALLER_TOKEN)
        page = await client.get("/ui/transfers/t-1")
        assert page.status_code == 200
        assert 'action="/ui/transfers/t-1/resolve"' not in page.text
        assert "Only an operator may cancel, retry or resolve; shop is a caller." in page.text
        before = await history_length(log, "t-1")
        answer = await client.post(
            "/ui/transfers/t-1/resolve",
            data={"csrf": csrf_of(page.text), "resolution": "nothing_to_move", "reason": "looks fine to me"},
        )
        assert answer.status_code == 403
        assert "operator_only" in answer.text
        assert await history_length(log, "t-1") == before
        assert await log.states(["t-1"]) == {"t-1": SagaState.NEEDS_ATTENTION}

    with_console(silent_ports, scenario)


@pytest.mark.parametrize("csrf", ["missing", "wrong", "another operator's"])
def test_an_action_without_its_own_csrf_token_is_403_and_nothing_is_recorded(
    silent_ports: tuple[str, str], csrf: str
) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, silent_ports, "t-1", SagaState.NEEDS_ATTENTION)
        await signed_in(client, "oscar-operator-token")
        oscars = csrf_of((await client.get("/ui/transfers/t-1")).text)
        await signed_in(client, OPERATOR_TOKEN)
        own = csrf_of((await client.get("/ui/transfers/t-1")).text)
        tampered = own[:-1] + ("0" if own[-1] != "0" else "1")
        presented = {"missing": None, "wrong": tampered, "another operator's": oscars}[csrf]
        form = {"resolution": "nothing_to_move", "reason": "forged"}
        if presented is not None:
            form["csrf"] = presented
        before = await history_length(log, "t-1")
        answer = await client.post("/ui/transfers/t-1/resolve", data=form)
        assert answer.status_code == 403
        assert "csrf_refused" in answer.text
        assert await history_length(log, "t-1") == before
        assert await log.action_counts() == {}

    with_console(silent_ports, scenario, operators={"olga": OPERATOR_TOKEN, "oscar": "oscar-operator-token"})


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"},
    ],
)
def test_a_post_from_another_origin_is_403_and_nothing_is_recorded(
    silent_ports: tuple[str, str], headers: dict[str, str]
) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, silent_ports, "t-1", SagaState.NEEDS_ATTENTION)
        await signed_in(client, OPERATOR_TOKEN)
        page = await client.get("/ui/transfers/t-1")
        form = {"csrf": csrf_of(page.text), "resolution": "nothing_to_move", "reason": "from elsewhere"}
        answer = await client.post("/ui/transfers/t-1/resolve", data=form, headers=headers)
        assert answer.status_code == 403
        assert "cross_origin_refused" in answer.text
        assert await log.action_counts() == {}

    with_console(silent_ports, scenario)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "http://console.test", "Sec-Fetch-Site": "same-origin"},
        # What Chromium sends for a form posted from a page under Referrer-Policy: no-referrer.
        {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
    ],
)
def test_a_post_from_the_console_own_page_is_taken(silent_ports: tuple[str, str], headers: dict[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, silent_ports, "t-1", SagaState.NEEDS_ATTENTION)
        await signed_in(client, OPERATOR_TOKEN)
        page = await client.get("/ui/transfers/t-1")
        form = {"csrf": csrf_of(page.text), "resolution": "nothing_to_move", "reason": "checked both trails"}
        answer = await client.post("/ui/transfers/t-1/resolve", data=form, headers=headers)
        assert answer.status_code == 303
        assert await log.action_counts() == {"resolve": 1}

    with_console(silent_ports, scenario)


@pytest.mark.parametrize(
    ("form", "shown"),
    [
        ({"resolution": "moved_by_hand", "reason": ""}, "a reason of 1-500 characters is required"),
        ({"resolution": "moved_by_hand", "reason": "   "}, "a reason of 1-500 characters is required"),
        ({"resolution": "moved_by_hand", "reason": "r" * 501}, "a reason of 1-500 characters is required"),
        ({"resolution": "moved_by_hand", "reason": "two\nlines"}, "a reason is one line"),
        ({"resolution": "", "reason": "why not"}, "choose how the transfer was settled"),
        ({"resolution": "lost_it", "reason": "why not"}, "choose how the transfer was settled"),
    ],
)
def test_an_incomplete_form_is_422_shown_again_and_nothing_is_recorded(
    silent_ports: tuple[str, str], form: dict[str, str], shown: str
) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, silent_ports, "t-1", SagaState.NEEDS_ATTENTION)
        await signed_in(client, OPERATOR_TOKEN)
        page = await client.get("/ui/transfers/t-1")
        answer = await client.post("/ui/transfers/t-1/resolve", data={"csrf": csrf_of(page.text), **form})
        assert answer.status_code == 422
        assert shown in answer.text
        assert 'action="/ui/transfers/t-1/resolve"' in answer.text, "the form is there to correct"
        assert await log.action_counts() == {}

    with_console(silent_ports, scenario)


def test_an_action_the_state_does_not_allow_is_409_with_its_code(silent_ports: tuple[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, silent_ports, "t-1", SagaState.COMPLETED)
        await signed_in(client, OPERATOR_TOKEN)
        page = await client.get("/ui/transfers/t-1")
        answer = await client.post("/ui/transfers/t-1/cancel", data={"csrf": csrf_of(page.text), "reason": "late"})
        assert answer.status_code == 409
        assert "<code>transfer_already_ended</code> the transfer already ended COMPLETED" in answer.text
        assert await log.action_counts() == {}

    with_console(silent_ports, scenario)


@pytest.mark.parametrize(
    ("state", "offered"),
    [
        (SagaState.PENDING, {"cancel"}),
        (SagaState.DEBITING, set()),
        (SagaState.COMPENSATING, {"retry"}),
        (SagaState.NEEDS_ATTENTION, {"resolve"}),
        (SagaState.COMPLETED, set()),
    ],
)
def test_only_the_actions_the_state_allows_are_offered(
    silent_ports: tuple[str, str], state: SagaState, offered: set[str]
) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, silent_ports, "t-1", state)
        await signed_in(client, OPERATOR_TOKEN)
        page = await client.get("/ui/transfers/t-1")
        assert set(re.findall(r'action="/ui/transfers/t-1/(\w+)"', page.text)) == offered

    with_console(silent_ports, scenario)


def test_without_tokens_the_console_is_read_only_and_refuses_every_action(silent_ports: tuple[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, silent_ports, "t-1", SagaState.NEEDS_ATTENTION)
        page = await client.get("/ui/transfers/t-1")
        assert page.status_code == 200
        assert "its console is read-only for everyone" in page.text
        assert 'action="/ui/transfers/t-1/resolve"' not in page.text
        answer = await client.post(
            "/ui/transfers/t-1/resolve", data={"resolution": "nothing_to_move", "reason": "anyone?"}
        )
        assert answer.status_code == 403
        assert "operator_only" in answer.text
        assert await log.action_counts() == {}

    with_console(silent_ports, scenario, operators={}, callers={})


# -- what the pages show ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/ui", 303),
        ("/ui/", 200),
        ("/ui/search?q=alice", 200),
        ("/ui/transfers/t-1", 200),
        ("/ui/transfers/nobody", 404),
        ("/ui/no-such-page", 404),
        ("/ui/sign-in", 200),
        ("/ui/static/console.css", 200),
    ],
)
def test_every_console_answer_carries_the_security_headers(
    silent_ports: tuple[str, str], path: str, status: int
) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, silent_ports, "t-1", SagaState.COMPLETED)
        answer = await client.get(path, headers={"Authorization": f"Bearer {CALLER_TOKEN}"})
        assert answer.status_code == status
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers[name] == value
        assert answer.headers["content-security-policy"].startswith("default-src 'self'")

    with_console(silent_ports, scenario)


def test_the_stylesheet_is_the_only_other_file_and_no_page_has_a_script(silent_ports: tuple[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, silent_ports, "t-1", SagaState.NEEDS_ATTENTION)
        await signed_in(client, OPERATOR_TOKEN)
        for path in ("/ui/", "/ui/search?q=alice", "/ui/transfers/t-1", "/ui/sign-in"):
            page = (await client.get(path)).text
            assert "<script" not in page
            assert " style=" not in page, "an inline style would break under default-src 'self'"
            assert re.findall(r'(?:href|src)="(https?:[^"]*)"', page) == []
            assert '<link rel="stylesheet" href="/ui/static/console.css">' in page

    with_console(silent_ports, scenario)


def test_an_unknown_transfer_is_a_404_page(silent_ports: tuple[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await signed_in(client, OPERATOR_TOKEN)
        for transaction_id in ("t-404", "not%20an%20id"):
            answer = await client.get(f"/ui/transfers/{transaction_id}")
            assert answer.status_code == 404
            assert answer.headers["content-type"].startswith("text/html")
            assert "unknown_transfer" in answer.text
            assert "no transfer has the id" in answer.text

    with_console(silent_ports, scenario)


def test_the_overview_counts_every_state_and_lists_the_stuck_oldest_first(silent_ports: tuple[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        minute = 60_000
        await saga_in(log, silent_ports, "done-now", SagaState.COMPLETED, ended_ms=NOW - minute)
        await saga_in(log, silent_ports, "done-long-ago", SagaState.COMPLETED, ended_ms=NOW - 10 * minute)
        await saga_in(log, silent_ports, "young-compensation", SagaState.COMPENSATING, created_ms=NOW - 30_000)
        await saga_in(
            log, silent_ports, "old-compensation", SagaState.COMPENSATING, created_ms=NOW - 5 * minute, error="503"
        )
        await saga_in(
            log, silent_ports, "forgotten", SagaState.NEEDS_ATTENTION, created_ms=NOW - 90 * minute, error="new ledger"
        )
        await saga_in(
            log, silent_ports, "overdue", SagaState.PENDING, created_ms=NOW - 2 * minute, deadline_ms=NOW - minute
        )
        await saga_in(log, silent_ports, "to-cancel", SagaState.PENDING)
        await saga_in(log, silent_ports, "to-resolve", SagaState.NEEDS_ATTENTION)
        await log.act(OperatorAction("to-cancel", ActionKind.CANCEL, "olga", "duplicate", NOW))
        await log.act(OperatorAction("to-resolve", ActionKind.RESOLVE, "olga", "moved", NOW, Resolution.MOVED_BY_HAND))
        await log.act(OperatorAction("old-compensation", ActionKind.RETRY, "olga", "again", NOW))

        page = (await client.get("/ui/", headers={"Authorization": f"Bearer {CALLER_TOKEN}"})).text
        expected = {state: 0 for state in SagaState} | {
            SagaState.COMPLETED: 2,
            SagaState.COMPENSATING: 2,
            SagaState.NEEDS_ATTENTION: 1,
            SagaState.PENDING: 1,
            SagaState.CANCELLED: 1,
            SagaState.RESOLVED: 1,
        }
        assert {state: state_count(page, state.value) for state in SagaState} == expected
        assert state_count(page, "all") == 8
        assert metric(page, "completed_recently") == "1"
        assert metric(page, "compensating_too_long") == "1"
        assert metric(page, "needs_attention") == "1"
        assert metric(page, "oldest_needs_attention") == "1 h 30 min"
        assert metric(page, "deadlines_expired") == "1"
        assert [metric(page, f"actions_{kind}") for kind in ("cancel", "retry", "resolve")] == ["1", "1", "1"]
        stuck = page[page.index('id="stuck"') :]
        listed = re.findall(r'<a href="/ui/transfers/([^"]+)"><code>', stuck)
        assert listed == ["forgotten", "old-compensation", "overdue"]
        assert "waits for an operator" in stuck
        assert "compensating too long" in stuck
        assert "past its deadline" in stuck
        assert "<td>1 h 30 min</td>" in stuck
        assert '<td class="error">new ledger</td>' in stuck

    with_console(silent_ports, scenario)


def test_search_finds_a_transfer_by_id_and_by_account(silent_ports: tuple[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, silent_ports, "t-alice-bob", SagaState.COMPLETED)
        await saga_in(log, silent_ports, "t-carol-alice", SagaState.COMPLETED, source_user="carol", target_user="alice")
        await saga_in(log, silent_ports, "t-dan-erin", SagaState.COMPLETED, source_user="dan", target_user="erin")
        await signed_in(client, CALLER_TOKEN)

        def found(page: str) -> set[str]:
            return set(re.findall(r'<a href="/ui/transfers/([^"]+)"><code>', page))

        by_id = await client.get("/ui/search", params={"q": "t-dan-erin"})
        assert by_id.status_code == 200
        assert found(by_id.text) == {"t-dan-erin"}
        assert found((await client.get("/ui/search", params={"q": "alice"})).text) == {"t-alice-bob", "t-carol-alice"}
        at_source_bank = await client.get("/ui/search", params={"q": "bank-a:alice"})
        assert found(at_source_bank.text) == {"t-alice-bob"}
        assert found((await client.get("/ui/search", params={"q": "bank-b:alice"})).text) == {"t-carol-alice"}
        nothing = await client.get("/ui/search", params={"q": "zoe"})
        assert found(nothing.text) == set()
        assert "No transfer has this account at either end." in nothing.text
        too_long = await client.get("/ui/search", params={"q": "x" * 201})
        assert too_long.status_code == 422

    with_console(silent_ports, scenario)


def test_user_data_is_escaped_on_every_page(silent_ports: tuple[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, silent_ports, "t-1", SagaState.NEEDS_ATTENTION, error=f"bank said {SCRIPT}")
        await signed_in(client, OPERATOR_TOKEN)
        page = await client.get("/ui/transfers/t-1")
        answer = await client.post(
            "/ui/transfers/t-1/resolve",
            data={"csrf": csrf_of(page.text), "resolution": "nothing_to_move", "reason": f"see {SCRIPT}"},
        )
        assert answer.status_code == 303
        shown = [
            await client.get("/ui/transfers/t-1"),
            await client.get("/ui/"),
            await client.get("/ui/search", params={"q": SCRIPT}),
            await client.get("/ui/search", params={"q": "alice"}),
        ]
        for answer in shown:
            assert SCRIPT not in answer.text
            assert "<script" not in answer.text
        assert f"see {ESCAPED_SCRIPT}" in shown[0].text, "the reason, in the timeline"
        assert f"bank said {ESCAPED_SCRIPT}" in shown[0].text, "the error, in the timeline and the fields"
        assert ESCAPED_SCRIPT in shown[2].text, "the search, shown back"

    with_console(silent_ports, scenario)


def test_an_actor_name_is_escaped_like_any_user_data(silent_ports: tuple[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, silent_ports, "t-1", SagaState.NEEDS_ATTENTION)
        await signed_in(client, OPERATOR_TOKEN)
        page = await client.get("/ui/transfers/t-1")
        form = {"csrf": csrf_of(page.text), "resolution": "nothing_to_move", "reason": "ok"}
        assert (await client.post("/ui/transfers/t-1/resolve", data=form)).status_code == 303
        after = (await client.get("/ui/transfers/t-1")).text
        assert SCRIPT not in after
        assert f'<td class="actor">{ESCAPED_SCRIPT}</td>' in after

    with_console(silent_ports, scenario, operators={SCRIPT: OPERATOR_TOKEN})


def test_a_credential_in_a_logged_service_url_never_reaches_a_page(silent_ports: tuple[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        logged = silent_ports[0].replace("http://", "http://ops:hunter2@")
        record = SagaRecord(
            "t-1", AccountRef(logged, "carol"), AccountRef(logged, "dave"), 700, created_at_ms=NOW - 600_000, epoch=1
        )
        await log.create(record, SagaState.PENDING)
        attempt = Attempt("debit", 1, None, None, 1_000, f"ConnectError at {logged}", url=logged)
        await log.commit(Change("t-1", NOW - 500_000, SagaState.COMPENSATING, attempts=[attempt], error=logged))
        await signed_in(client, OPERATOR_TOKEN)
        for path in ("/ui/", "/ui/search?q=carol"):
            page = await client.get(path)
            assert page.status_code == 200
            assert "hunter2" not in page.text, path
        transfer = (await client.get("/ui/transfers/t-1")).text
        assert "hunter2" not in transfer
        assert "ConnectError at http://***@127.0.0.1" in transfer, "the error, quoted without the credential"

    with_console(silent_ports, scenario)


class FailingLog(MemorySagaLog):
    """A log whose database is gone: every overview fails as a SQL log's would."""

    async def overview(self, *, now_ms: int, stuck_after_ms: int, limit: int) -> Overview:
        raise SagaLogError("the saga log at postgresql://saga:hunter2@db/saga cannot be reached")


def test_a_log_that_fails_is_a_503_page_that_quotes_no_credential(silent_ports: tuple[str, str]) -> None:
    async def main() -> None:
        async with console(silent_ports, FailingLog(exclusive=True)) as client:
            answer = await client.get("/ui/", headers={"Authorization": f"Bearer {CALLER_TOKEN}"})
            assert answer.status_code == 503
            assert answer.headers["content-type"].startswith("text/html")
            assert "log_unavailable" in answer.text
            assert "hunter2" not in answer.text

    run(main())


def test_a_cookie_of_a_token_the_service_no_longer_has_is_dropped(silent_ports: tuple[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        client.cookies.set(SESSION_COOKIE, "b2xkLXRva2Vu", domain="console.test", path="/ui")
        answer = await client.get("/ui/")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/sign-in"
        assert answer.headers["set-cookie"].startswith(f'{SESSION_COOKIE}=""; ')

    with_console(silent_ports, scenario)


# -- the services' trails, and the verdict ------------------------------------------------


def test_an_unreachable_service_is_shown_unreadable_and_the_verdict_cannot_tell(silent_ports: tuple[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, silent_ports, "t-1", SagaState.COMPLETED)
        page = await client.get("/ui/transfers/t-1", headers={"Authorization": f"Bearer {CALLER_TOKEN}"})
        assert page.status_code == 200
        assert page.text.count("Unreadable: ConnectError") == 2
        assert "The trails <strong>cannot tell</strong>" in page.text
        assert "the trail at bank-a cannot be read" in page.text

    with_console(silent_ports, scenario)


def trail_answers(trails: dict[str, list[dict[str, Any]]], seen: list[httpx.Request]) -> httpx.MockTransport:
    """Accounts services that answer GET /transactions/{id} with the trail given for their port."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        transaction_id = request.url.path.rsplit("/", 1)[-1]
        entries = trails[str(request.url.port)]
        return httpx.Response(200, json={"transaction_id": transaction_id, "entries": entries})

    return httpx.MockTransport(answer)


def completed(directory: ServiceDirectory) -> SagaRecord:
    return SagaRecord(
        "t-1",
        directory.account("bank-a", "alice"),
        directory.account("bank-b", "bob"),
        2_500,
        SagaState.COMPLETED,
    )


def applied(operation: str, user_id: str) -> dict[str, Any]:
    return {"operation": operation, "user_id": user_id, "amount": 2_500, "status": 200, "outcome": "applied"}


def read_and_judge(record: SagaRecord, trails: dict[str, list[dict[str, Any]]], seen: list[httpx.Request]) -> Any:
    directory = directory_of(("http://127.0.0.1:9101", "http://127.0.0.1:9102"))
    reader = TrailReader(directory, Presenter(directory), "bank-token", transport=trail_answers(trails, seen))
    readings = run(reader.read_all(record))
    return readings, judge(reader.resolved(record), readings)


def test_trails_that_match_a_completed_transfer_agree_and_are_read_with_the_bank_token() -> None:
    seen: list[httpx.Request] = []
    record = completed(directory_of(("http://127.0.0.1:9101", "http://127.0.0.1:9102")))
    readings, verdict = read_and_judge(
        record, {"9101": [applied("debit", "alice")], "9102": [applied("credit", "bob")]}, seen
    )
    assert verdict.word == "agree"
    assert [reading.service for reading in readings] == ["bank-a", "bank-b"]
    assert [line.operation for reading in readings for line in reading.lines] == ["debit", "credit"]
    assert {request.url.path for request in seen} == {"/transactions/t-1"}
    assert {request.headers["authorization"] for request in seen} == {"Bearer bank-token"}


def test_a_completed_transfer_whose_credit_the_target_does_not_know_disagrees() -> None:
    record = completed(directory_of(("http://127.0.0.1:9101", "http://127.0.0.1:9102")))
    _, verdict = read_and_judge(record, {"9101": [applied("debit", "alice")], "9102": []}, [])
    assert verdict.word == "disagree"
    assert any(line.startswith("lost: t-1") and "bank-b has no entry" in line for line in verdict.because)


def test_a_cancelled_transfer_agrees_with_trails_that_never_heard_of_it() -> None:
    record = completed(directory_of(("http://127.0.0.1:9101", "http://127.0.0.1:9102")))
    record.state = SagaState.CANCELLED
    _, verdict = read_and_judge(record, {"9101": [], "9102": []}, [])
    assert verdict.word == "agree"
    _, moved = read_and_judge(record, {"9101": [applied("debit", "alice")], "9102": []}, [])
    assert moved.word == "disagree"
    assert moved.because[0].startswith("cancelled moved money: t-1")


@pytest.mark.parametrize("state", [SagaState.DEBITING, SagaState.NEEDS_ATTENTION, SagaState.RESOLVED])
def test_a_transfer_not_ended_or_settled_by_hand_cannot_be_told(state: SagaState) -> None:
    record = completed(directory_of(("http://127.0.0.1:9101", "http://127.0.0.1:9102")))
    record.state = state
    _, verdict = read_and_judge(record, {"9101": [applied("debit", "alice")], "9102": []}, [])
    assert verdict.word == "cannot tell"


# -- small pieces -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "account"),
    [("alice", (None, "alice")), ("bank-a:alice", ("bank-a", "alice")), (":alice", (None, "alice"))],
)
def test_a_search_names_an_account_with_or_without_its_service(query: str, account: tuple[str | None, str]) -> None:
    assert parse_account(query) == account


@pytest.mark.parametrize(
    ("ms", "shown"),
    [
        (0, "0 s"),
        (59_999, "59 s"),
        (65_000, "1 min 05 s"),
        (2 * 3_600_000 + 60_000, "2 h 01 min"),
        (50 * 3_600_000, "2 d 2 h"),
    ],
)
def test_an_age_reads_as_a_person_says_it(ms: int, shown: str) -> None:
    assert describe_age(ms) == shown
