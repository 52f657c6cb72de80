"""The operator console in a real headless Chromium, over real processes: what an operator sees, and does.

Two ``python -m server`` banks and one ``python -m saga serve`` whose SQLite
saga log already holds two sagas that need an operator: one COMPENSATING
against a service where nothing answers (so it stays stuck), and one in
NEEDS_ATTENTION. A batch of transfers goes through the API first. The
browser then signs in with a caller's token (it may read, and its forged
action is refused, recording nothing), and with an operator's token, with
which it resolves the NEEDS_ATTENTION transfer through the page's form.

Driven by playwright against the machine's own Chromium, as
test_docs_browser.py does, and for the same reason: the console must work
on a machine with no way out, so every request it makes must stay on the
service's own origin.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from generated_client.transfers.models import EventKind
from saga.logs import SqliteSagaLog
from saga.records import AccountRef, Change, SagaRecord
from saga.service.process import TransfersProcess
from saga.states import SagaState
from server.process import REPO_ROOT
from tests.conftest import StartServer
from tests.support.browser import CHROMIUM_FLAGS, chromium
from tests.support.transfers import (
    TransfersClient,
    events_of,
    every_transfer,
    new_key,
    submitted,
    transfer_request,
    transfers_client,
    wait_for_end,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

SCREENSHOTS = REPO_ROOT / "test-artifacts" / "console"
OPERATOR_TOKEN = "olga-console-operator-7d1e"
CALLER_TOKEN = "shop-console-caller-3b9a"
BANK_A = {"alice": 100_000, "amir": 100_000}
BANK_B = {"bob": 100_000, "bea": 100_000}
STUCK_COMPENSATION = "stuck-compensation-1"
NEEDS_ATTENTION = "needs-attention-1"
RESOLVE_REASON = "bank-b restored from backup; credited bob by hand, ticket 4411"
#: The batch: (source, target, amount); the last asks more than bob has, so it fails.
BATCH = [
    (("bank-a", "alice"), ("bank-b", "bob"), 1_200),
    (("bank-a", "alice"), ("bank-b", "bea"), 800),
    (("bank-a", "amir"), ("bank-b", "bob"), 450),
    (("bank-b", "bea"), ("bank-a", "amir"), 300),
    (("bank-b", "bob"), ("bank-a", "alice"), 10_000_000),
]

Story = tuple[SagaRecord, list[Change]]


@pytest.fixture
def nowhere() -> Iterator[str]:
    """A loopback URL where nothing answers, for as long as the test runs: the port is bound and never listened on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{held.getsockname()[1]}"


def stuck_compensation(nowhere: str, now_ms: int) -> Story:
    """A saga that debited, lost its credit, and compensates against a service that will never answer."""
    created = now_ms - 120_000
    record = SagaRecord(
        STUCK_COMPENSATION,
        AccountRef(nowhere, "carol"),
        AccountRef(nowhere, "dave"),
        700,
        created_at_ms=created,
        updated_at_ms=created,
        epoch=1,
    )
    error = "credit: ConnectError: connection refused"
    return record, [
        Change(STUCK_COMPENSATION, created + 1_000, SagaState.DEBITING),
        Change(STUCK_COMPENSATION, created + 2_000, SagaState.COMPENSATING, fence_credit=True, error=error),
    ]


def forgotten_by_a_ledger(bank_a: str, bank_b: str, now_ms: int) -> Story:
    """A saga that stopped in NEEDS_ATTENTION an hour ago: a bank answered from a ledger that forgot it."""
    created = now_ms - 3_600_000
    record = SagaRecord(
        NEEDS_ATTENTION,
        AccountRef(bank_a, "alice", "bank-a"),
        AccountRef(bank_b, "bob", "bank-b"),
        2_500,
        created_at_ms=created,
        updated_at_ms=created,
        epoch=1,
    )
    error = "bank-b answered from a new ledger: it forgot the credit"
    return record, [
        Change(NEEDS_ATTENTION, created + 1_000, SagaState.DEBITING),
        Change(NEEDS_ATTENTION, created + 2_000, SagaState.NEEDS_ATTENTION, error=error),
    ]


def write_log(db: Path, stories: list[Story]) -> None:
    """The saga log serve will open, written (and closed, so unlocked) before serve starts."""

    async def write() -> None:
        log = await SqliteSagaLog.open(db)
        try:
            for record, changes in stories:
                await log.create(record, SagaState.PENDING)
                await log.commit_all(changes)
        finally:
            await log.close()

    asyncio.run(write())


def submit_the_batch(api: TransfersClient) -> list[str]:
    """Every transfer of BATCH through the API, each waited for to its end; their ids."""
    sent = [submitted(api, transfer_request(*transfer), new_key("console")) for transfer in BATCH]
    ended = [wait_for_end(api, transfer.transaction_id) for transfer in sent]
    assert Counter(transfer.state.value for transfer in ended) == {"COMPLETED": 4, "FAILED": 1}
    return [transfer.transaction_id for transfer in ended]


def screenshot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, url: str, token: str) -> None:
    """From a signed-out browser: any page leads to the form, and the token to the overview."""
    from playwright.sync_api import expect

    page.goto(f"{url}/ui/transfers/{NEEDS_ATTENTION}")
    expect(page).to_have_url(f"{url}/ui/sign-in")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{url}/ui/")


def sign_out(page: Page, url: str) -> None:
    from playwright.sync_api import expect

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{url}/ui/sign-in")


def a_caller_reads_and_its_forged_resolve_records_nothing(page: Page, url: str, api: TransfersClient) -> None:
    from playwright.sync_api import expect

    events_before = len(events_of(api, NEEDS_ATTENTION))
    page.goto(f"{url}/ui/transfers/{NEEDS_ATTENTION}")
    expect(page.locator(".who .name")).to_have_text("shop")
    expect(page.locator("form.action-resolve")).to_have_count(0)
    # The form is not offered; sent anyway, with the session's own CSRF token, it is refused by the server.
    csrf = page.locator('input[name="csrf"]').first.get_attribute("value")
    assert csrf
    forged = page.request.post(
        f"{url}/ui/transfers/{NEEDS_ATTENTION}/resolve",
        form={"csrf": csrf, "resolution": "nothing_to_move", "reason": "a caller tries"},
        max_redirects=0,
    )
    assert forged.status == 403
    assert "operator_only" in forged.text()
    assert len(events_of(api, NEEDS_ATTENTION)) == events_before


def the_overview_counts_the_log_and_lists_the_stuck(page: Page, in_the_log: Counter[str]) -> None:
    from playwright.sync_api import expect

    for state in SagaState:
        expect(page.locator(f'td[data-state="{state.value}"]')).to_have_text(str(in_the_log.get(state.value, 0)))
    expect(page.locator('td[data-state="all"]')).to_have_text(str(len(BATCH) + 2))
    expect(page.locator('[data-metric="completed_recently"]')).to_have_text("4")
    expect(page.locator('[data-metric="compensating_too_long"]')).to_have_text("1")
    expect(page.locator('[data-metric="needs_attention"]')).to_have_text("1")
    stuck = page.locator("#stuck tbody tr")
    expect(stuck).to_have_count(2)
    expect(stuck.nth(0)).to_contain_text(NEEDS_ATTENTION)
    expect(stuck.nth(0)).to_contain_text("it forgot the credit")
    expect(stuck.nth(1)).to_contain_text(STUCK_COMPENSATION)
    expect(stuck.nth(1)).to_contain_text("compensating too long")


def a_search_by_account_lists_its_transfers(page: Page, url: str) -> None:
    from playwright.sync_api import expect

    page.get_by_label("Find").fill("bank-a:alice")
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(f"{url}/ui/search?q=bank-a%3Aalice")
    with_alice = [transfer for transfer in BATCH if ("bank-a", "alice") in transfer[:2]]
    found = page.locator("section.panel").nth(1).locator("tbody tr")
    expect(found).to_have_count(len(with_alice) + 1)  # and the saga a ledger forgot


def the_trails_are_read_from_the_banks(page: Page, url: str, completed_id: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{url}/ui/transfers/{completed_id}")
    expect(page.locator("#verdict")).to_contain_text("The trails agree with the log")
    page.goto(f"{url}/ui/transfers/{STUCK_COMPENSATION}")
    expect(page.locator(".unreadable")).to_contain_text("Unreadable")
    expect(page.locator("form.action-retry")).to_have_count(1)


def the_operator_resolves_through_the_form(page: Page, url: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{url}/ui/transfers/{NEEDS_ATTENTION}")
    form = page.locator("form.action-resolve")
    form.get_by_label("Resolution").select_option("moved_by_hand")
    form.get_by_label("Reason").fill(RESOLVE_REASON)
    form.get_by_role("button", name="Resolve").click()
    expect(page).to_have_url(f"{url}/ui/transfers/{NEEDS_ATTENTION}")
    expect(page.locator(".flash")).to_contain_text("Resolved")
    action = page.locator("#timeline tr.event-action")
    expect(action).to_have_count(1)
    expect(action.locator(".actor")).to_have_text("olga")
    expect(action.locator(".reason")).to_have_text(RESOLVE_REASON)
    expect(action).to_contain_text("moved_by_hand")
    expect(action).to_contain_text("RESOLVED")


def test_an_operator_reads_the_console_and_resolves_a_transfer_in_a_real_browser(
    start_server: StartServer, tmp_path: Path, nowhere: str
) -> None:
    executable = chromium()
    from playwright.sync_api import sync_playwright

    bank_a, bank_b = start_server(BANK_A), start_server(BANK_B)
    db = tmp_path / "saga.db"
    now_ms = time.time_ns() // 1_000_000
    write_log(db, [stuck_compensation(nowhere, now_ms), forgotten_by_a_ledger(bank_a.url, bank_b.url, now_ms)])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    requested: list[str] = []
    with (
        TransfersProcess(
            {"bank-a": bank_a.url, "bank-b": bank_b.url},
            db=db,
            api_tokens={"shop": CALLER_TOKEN},
            operator_tokens={"olga": OPERATOR_TOKEN},
            extra_args=["--stuck-after-seconds", "1"],
        ) as service,
        sync_playwright() as playwright,
    ):
        api = transfers_client(service.url, CALLER_TOKEN)
        batch = submit_the_batch(api)
        in_the_log = Counter(transfer.state.value for transfer in every_transfer(api))
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(f"{service.url}/ui/")
            screenshot(page, "sign-in")

            sign_in(page, service.url, CALLER_TOKEN)
            a_caller_reads_and_its_forged_resolve_records_nothing(page, service.url, api)
            sign_out(page, service.url)

            sign_in(page, service.url, OPERATOR_TOKEN)
            the_overview_counts_the_log_and_lists_the_stuck(page, in_the_log)
            screenshot(page, "overview")
            a_search_by_account_lists_its_transfers(page, service.url)
            screenshot(page, "search")
            the_trails_are_read_from_the_banks(page, service.url, batch[0])
            the_operator_resolves_through_the_form(page, service.url)
            screenshot(page, "transfer")
        finally:
            browser.close()

        resolved = next(transfer for transfer in every_transfer(api) if transfer.transaction_id == NEEDS_ATTENTION)
        assert resolved.state.value == "RESOLVED"
        assert [event.kind for event in events_of(api, NEEDS_ATTENTION)].count(EventKind.ACTION) == 1

    own = urlsplit(service.url).netloc
    elsewhere = [url for url in requested if urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc != own]
    assert not elsewhere, f"the console requested other hosts: {elsewhere}"
    assert any(url.endswith("/ui/static/console.css") for url in requested)
    for name in ("sign-in", "overview", "search", "transfer"):
        shot = SCREENSHOTS / f"{name}.png"
        assert shot.is_file(), f"no screenshot of the {name} page"
        assert shot.stat().st_size > 0
