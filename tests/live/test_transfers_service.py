"""The transfers service (``python -m saga serve``) from outside: real processes, real HTTP, the generated client.

Two ``python -m server`` banks with credit faults and one transfers service
are shared by the module; a test that needs its own flags (API tokens, a
PostgreSQL log, a kill) starts its own. Every transfer is judged against
what the banks themselves recorded (tests/support/transfers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import selectors
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, cast
from urllib.parse import quote, urlsplit

import asyncpg
import httpx
import pytest

from evaluation.scratch_database import server_dsn
from generated_client.transfers.api.operations import metrics
from generated_client.transfers.api.transfers import get_transfer, get_transfer_events, list_transfers
from generated_client.transfers.models import EventKind, Transfer, TransferPage, TransferRequest, TransferState
from generated_client.transfers.types import UNSET, Unset
from saga import verify
from saga.service.process import TransfersProcess
from server.process import REPO_ROOT, ServerProcess
from tests.support.cli import saga_cli
from tests.support.proxy import DelayingProxy
from tests.support.transfers import (
    ENDS,
    Banks,
    await_end,
    events_of,
    every_transfer,
    new_key,
    problem_code,
    read,
    story_mismatches_of,
    submit,
    submit_until_answered,
    submitted,
    transfer_request,
    transfers_client,
    wait_for_end,
)

BANK_A = {"alice": 1_000_000, "amir": 1_000_000, "ana": 1_000_000}
BANK_B = {"bob": 1_000_000, "bea": 1_000_000, "poor": 10}
ALICE = ("bank-a", "alice")
BOB = ("bank-b", "bob")
#: Every credit through the proxy in front of bank-b reaches it this late: a transfer that cannot end soon.
SLOW_CREDIT_SECONDS = 3.0
MAX_BODY_BYTES = 4096


@dataclass(frozen=True)
class Shared:
    service: TransfersProcess
    banks: Banks


@pytest.fixture(scope="module")
def bank_a() -> Iterator[ServerProcess]:
    with ServerProcess(BANK_A, credit_fault_rate=0.3, fault_seed=11) as bank:
        yield bank


@pytest.fixture(scope="module")
def bank_b() -> Iterator[ServerProcess]:
    with ServerProcess(BANK_B, credit_fault_rate=0.3, fault_seed=12) as bank:
        yield bank


@pytest.fixture(scope="module")
def shared(bank_a: ServerProcess, bank_b: ServerProcess) -> Iterator[Shared]:
    banks = Banks({"bank-a": bank_a.url, "bank-b": bank_b.url})
    with (
        DelayingProxy(bank_b.port, delay=SLOW_CREDIT_SECONDS, prefix=b"POST /credit") as slow,
        TransfersProcess(
            {**banks.urls, "slow-b": slow.url}, extra_args=["--max-body-bytes", str(MAX_BODY_BYTES)]
        ) as service,
    ):
        yield Shared(service, banks)


@pytest.fixture
def http(shared: Shared) -> Iterator[httpx.Client]:
    """Plain HTTP to the shared service, for requests the generated client cannot make (bad headers, bad JSON)."""
    with httpx.Client(base_url=shared.service.url, timeout=45) as client:
        yield client


def body_json(source: tuple[str, str] = ALICE, target: tuple[str, str] = BOB, amount: object = 100) -> dict[str, Any]:
    return {
        "source": {"service": source[0], "user_id": source[1]},
        "target": {"service": target[0], "user_id": target[1]},
        "amount": amount,
    }


def keyed_transfers(service: TransfersProcess, key: str) -> list[Transfer]:
    return [t for t in every_transfer(transfers_client(service.url)) if t.idempotency_key == key]


# -- submitting -----------------------------------------------------------------------


def test_a_new_key_is_answered_201_with_its_location_and_a_minted_uuid(shared: Shared) -> None:
    client = transfers_client(shared.service.url)
    key = new_key()
    answer = submit(client, transfer_request(ALICE, BOB, 2_500), key)
    assert answer.status_code == 201, answer.content
    transfer = answer.parsed
    assert isinstance(transfer, Transfer)
    assert uuid.UUID(transfer.transaction_id).version == 4
    assert answer.headers["location"] == f"/transfers/{transfer.transaction_id}"
    assert "idempotent-replayed" not in answer.headers
    assert (transfer.source.service, transfer.source.user_id) == ALICE
    assert (transfer.target.service, transfer.target.user_id) == BOB
    assert (transfer.amount, transfer.idempotency_key, transfer.submitted_by) == (2_500, key, None)
    assert read(client, transfer.transaction_id).transaction_id == transfer.transaction_id


def test_the_same_key_and_body_again_is_answered_200_as_a_replay_of_the_same_transfer(shared: Shared) -> None:
    client = transfers_client(shared.service.url)
    key, body = new_key(), transfer_request(ALICE, BOB, 300)
    first = submitted(client, body, key)
    for _ in range(2):
        again = submit(client, body, key)
        assert again.status_code == 200, again.content
        assert again.headers["idempotent-replayed"] == "true"
        assert isinstance(again.parsed, Transfer)
        assert again.parsed.transaction_id == first.transaction_id
    assert [t.transaction_id for t in keyed_transfers(shared.service, key)] == [first.transaction_id]


def test_the_same_key_with_another_body_is_refused_422_and_records_nothing(shared: Shared) -> None:
    client = transfers_client(shared.service.url)
    key = new_key()
    first = submitted(client, transfer_request(ALICE, BOB, 400), key)
    for other in (
        transfer_request(ALICE, BOB, 401),
        transfer_request(ALICE, ("bank-b", "bea"), 400),
        transfer_request(BOB, ALICE, 400),
    ):
        answer = submit(client, other, key)
        assert answer.status_code == 422, answer.content
        assert problem_code(answer) == "idempotency_key_reused"
    [only] = keyed_transfers(shared.service, key)
    assert (only.transaction_id, only.amount, only.target.user_id) == (first.transaction_id, 400, "bob")


def test_a_submission_without_an_idempotency_key_is_refused_400(http: httpx.Client) -> None:
    answer = http.post("/transfers", json=body_json())
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert problem_code(answer) == "missing_idempotency_key"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([(b"Idempotency-Key", b"k" * 256)], id="256 characters"),
        pytest.param([(b"Idempotency-Key", b"tab\tinside")], id="a tab"),
        pytest.param([(b"Idempotency-Key", b"caf\xe9")], id="a byte beyond ASCII"),
        pytest.param([(b"Idempotency-Key", b"one"), (b"Idempotency-Key", b"two")], id="two headers"),
    ],
)
def test_a_malformed_idempotency_key_is_refused_400_and_records_nothing(
    shared: Shared, http: httpx.Client, headers: list[tuple[bytes, bytes]]
) -> None:
    answer = http.post("/transfers", json=body_json(amount=777), headers=headers)
    assert answer.status_code == 400, answer.text
    assert problem_code(answer) == "invalid_idempotency_key"
    keys = {t.idempotency_key for t in every_transfer(transfers_client(shared.service.url))}
    assert not keys & {"k" * 256, "tab\tinside", "one", "two"}


def test_a_key_of_255_printable_characters_is_taken(shared: Shared) -> None:
    # Every printable character but a space at either end, which HTTP strips from any header value.
    key = ("~ " + "".join(map(chr, range(0x21, 0x7F))) + uuid.uuid4().hex)[:254] + "!"
    transfer = submitted(transfers_client(shared.service.url), transfer_request(ALICE, BOB, 5), key)
    assert transfer.idempotency_key == key


@pytest.mark.parametrize("side", ["source", "target"])
def test_a_service_the_transfers_service_was_not_started_with_is_refused_422(shared: Shared, side: str) -> None:
    accounts = {"source": ALICE, "target": BOB} | {side: ("bank-z", "zed")}
    key = new_key()
    answer = submit(
        transfers_client(shared.service.url), transfer_request(accounts["source"], accounts["target"], 10), key
    )
    assert answer.status_code == 422, answer.content
    assert problem_code(answer) == "unknown_service"
    assert keyed_transfers(shared.service, key) == []


# -- waiting --------------------------------------------------------------------------


def test_a_wait_is_held_until_the_transfer_ends_well_before_its_bound(shared: Shared) -> None:
    client = transfers_client(shared.service.url)
    transfer = submitted(client, transfer_request(ALICE, ("slow-b", "bob"), 10), new_key())
    started = time.monotonic()
    ended = read(client, transfer.transaction_id, wait=30)
    held = time.monotonic() - started
    assert ended.state in ENDS
    # The first credit alone reaches the bank SLOW_CREDIT_SECONDS late: the answer waited for it.
    assert SLOW_CREDIT_SECONDS - 0.5 < held < 20, held


def test_a_wait_on_a_transfer_that_cannot_end_in_time_answers_at_its_bound_with_the_state_then(
    shared: Shared,
) -> None:
    client = transfers_client(shared.service.url)
    transfer = submitted(client, transfer_request(ALICE, ("slow-b", "bea"), 10), new_key())
    started = time.monotonic()
    then = read(client, transfer.transaction_id, wait=1)
    held = time.monotonic() - started
    assert then.state in {TransferState.PENDING, TransferState.DEBITING, TransferState.CREDITING}
    assert 0.9 <= held < SLOW_CREDIT_SECONDS - 0.5, held
    assert wait_for_end(client, transfer.transaction_id).state in ENDS


@pytest.mark.parametrize("wait", ["31", "-1", "1.5", "soon"])
def test_a_wait_outside_0_to_30_seconds_is_refused_422(shared: Shared, wait: str) -> None:
    client = transfers_client(shared.service.url)
    transfer = submitted(client, transfer_request(ALICE, BOB, 1), new_key())
    started = time.monotonic()
    answer = httpx.get(f"{shared.service.url}/transfers/{transfer.transaction_id}", params={"wait": wait}, timeout=45)
    assert answer.status_code == 422
    assert problem_code(answer) == "invalid_request"
    assert time.monotonic() - started < 5


# -- listing --------------------------------------------------------------------------


def newest_first(transfers: list[Transfer]) -> list[Transfer]:
    return sorted(transfers, key=lambda t: (t.created_at, t.transaction_id), reverse=True)


def test_the_listing_is_newest_first_filters_by_state_and_its_cursors_visit_each_transfer_once(
    bank_a: ServerProcess, bank_b: ServerProcess
) -> None:
    # A log of its own, so that the listing holds exactly the transfers made here.
    with TransfersProcess({"bank-a": bank_a.url, "bank-b": bank_b.url}) as service:
        client = transfers_client(service.url)
        requests = [transfer_request(ALICE, BOB, 100 + n) for n in range(5)]
        requests += [transfer_request(("bank-b", "poor"), ALICE, 1_000 + n) for n in range(3)]
        requests += [transfer_request(("bank-b", "bea"), ("bank-a", "amir"), 7)]
        made = [submitted(client, body, new_key()) for body in requests]
        ended = [wait_for_end(client, transfer.transaction_id) for transfer in made]

        listing = every_transfer(client)
        assert [t.transaction_id for t in listing] == [t.transaction_id for t in newest_first(ended)]
        assert {t.transaction_id: t.state for t in listing} == {t.transaction_id: t.state for t in ended}

        pages: list[list[str]] = []
        after: str | Unset = UNSET
        while True:
            answer = list_transfers.sync_detailed(client=client, limit=2, after=after)
            page = answer.parsed
            assert isinstance(page, TransferPage), answer.content
            pages.append([t.transaction_id for t in page.transfers])
            if not isinstance(page.next_, str):
                break
            after = page.next_
        assert [len(page) for page in pages] == [2, 2, 2, 2, 1]
        assert [tid for page in pages for tid in page] == [t.transaction_id for t in listing]

        by_state = Counter(t.state for t in ended)
        assert by_state[TransferState.FAILED] == 3, "poor has 10 cents: each of its debits is refused"
        for state in TransferState:
            only = every_transfer(client, state=state, limit=1)
            assert [t.transaction_id for t in only] == [t.transaction_id for t in listing if t.state is state]


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ({"limit": "501"}, "a page above 500"),
        ({"limit": "0"}, "an empty page"),
        ({"after": "not-a-cursor"}, "a cursor this service never gave"),
        ({"after": "Zm9v"}, "base64 of something else"),
        ({"after": "!!"}, "not even base64url"),
        ({"state": "DONE"}, "no such state"),
    ],
)
def test_a_bad_listing_request_is_refused_422(shared: Shared, params: dict[str, str], why: str) -> None:
    answer = httpx.get(f"{shared.service.url}/transfers", params=params, timeout=10)
    assert answer.status_code == 422, why
    assert problem_code(answer) == "invalid_request"


# -- events ---------------------------------------------------------------------------


def test_the_events_tell_each_transfer_in_order_as_the_banks_audit_trails_do(shared: Shared) -> None:
    client = transfers_client(shared.service.url)
    requests = [transfer_request(ALICE, BOB, 10 + n) for n in range(14)]
    requests += [transfer_request(BOB, ("bank-a", "ana"), 20 + n) for n in range(4)]
    requests += [transfer_request(("bank-b", "poor"), ALICE, 11)]  # refused: insufficient funds
    requests += [transfer_request(ALICE, ("bank-b", "nobody"), 12)]  # no such account: the credit cannot land
    transfers = [wait_for_end(client, submitted(client, body, new_key()).transaction_id) for body in requests]
    assert story_mismatches_of(client, shared.banks, transfers) == []

    states = {t.transaction_id: t.state for t in transfers}
    assert states[transfers[-2].transaction_id] is TransferState.FAILED
    assert states[transfers[-1].transaction_id] is TransferState.COMPENSATED
    attempts = [
        event
        for transfer in transfers
        for event in events_of(client, transfer.transaction_id)
        if event.kind is EventKind.ATTEMPT
    ]
    assert {event.step.value for event in attempts if event.step} >= {"debit", "credit", "compensate_debit"}
    faults = [event for event in attempts if event.code == "injected_fault"]
    assert faults, "30% credit faults over 19 credits: some attempt must have met one"
    assert all(event.status == 500 and event.ledger_id for event in faults)
    assert all(isinstance(event.latency_us, int) and event.latency_us > 0 for event in attempts)
    assert all(event.worker and event.epoch for event in attempts)


def test_the_events_of_an_unknown_transfer_are_404(shared: Shared) -> None:
    client = transfers_client(shared.service.url)
    for answer in (
        get_transfer_events.sync_detailed(str(uuid.uuid4()), client=client),
        get_transfer.sync_detailed(str(uuid.uuid4()), client=client),
    ):
        assert answer.status_code == 404
        assert problem_code(answer) == "unknown_transfer"


# -- no request makes the service connect elsewhere ------------------------------------


class Trap:
    """A listener on 127.0.0.1 and ::1 at one port that counts every connection offered to it."""

    def __init__(self) -> None:
        self.connections = 0
        self._stop = threading.Event()
        self._sockets = self._bind()
        self.port: int = self._sockets[0].getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name="trap", daemon=True)

    @staticmethod
    def _bind() -> list[socket.socket]:
        for _ in range(20):
            v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            v4.bind(("127.0.0.1", 0))
            v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            try:
                v6.bind(("::1", v4.getsockname()[1]))
            except OSError:
                v4.close()
                v6.close()
                continue
            for listener in (v4, v6):
                listener.listen(64)
                listener.setblocking(False)
            return [v4, v6]
        raise RuntimeError("no port free on both 127.0.0.1 and ::1")

    def _accept(self) -> None:
        with selectors.DefaultSelector() as selector:
            for listener in self._sockets:
                selector.register(listener, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.05):
                    with contextlib.suppress(BlockingIOError):
                        connection, _ = cast(socket.socket, key.fileobj).accept()
                        self.connections += 1
                        connection.close()

    def __enter__(self) -> Trap:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for listener in self._sockets:
            listener.close()


def raw_request(port: int, request: bytes) -> int:
    """Send bytes as they are; the status of the answer, or 0 when the connection is closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while b"\r\n" not in answer and (chunk := connection.recv(4096)):
                answer += chunk
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def test_no_field_of_any_request_makes_the_service_connect_to_a_host_it_was_not_started_with(
    shared: Shared, http: httpx.Client
) -> None:
    with Trap() as trap:
        for address in ("127.0.0.1", "::1"):
            with socket.create_connection((address, trap.port), timeout=5):
                pass
        deadline = time.monotonic() + 5
        while trap.connections < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert trap.connections == 2, "the trap must count connections, or its count below proves nothing"

        port = trap.port
        lures = [
            f"http://127.0.0.1:{port}",
            f"http://[::1]:{port}/accounts",
            f"127.0.0.1:{port}",
            f"[::1]:{port}",
            "127.0.0.1",
            "::1",
            "localhost",
            f"localhost:{port}",
            "trap.localhost",
            f"bank-a=http://127.0.0.1:{port}",
            f"//127.0.0.1:{port}/",
            f"http://bank-a@127.0.0.1:{port}",
        ]
        refused: list[tuple[str, int]] = []
        taken: list[str] = []

        def judge(what: str, answer: httpx.Response) -> None:
            if answer.status_code in (200, 201):
                if answer.request.method == "POST":
                    transfer = answer.json()
                    assert {transfer["source"]["service"], transfer["target"]["service"]} <= {"bank-a", "bank-b"}
                    assert str(port) not in answer.headers.get("location", "")
                    taken.append(transfer["transaction_id"])
            else:
                refused.append((what, answer.status_code))
                assert 400 <= answer.status_code < 500, (what, answer.status_code, answer.text)

        for lure in lures:
            for side in ("source", "target"):
                for field in ("service", "user_id"):
                    body = body_json()
                    body[side] = {**body[side], field: lure}
                    judge(f"{side}.{field}", http.post("/transfers", json=body, headers={"Idempotency-Key": new_key()}))
                for extra in ("url", "urls", "callback"):
                    body = body_json()
                    body[side] = {**body[side], extra: lure}
                    judge(f"{side}.{extra}", http.post("/transfers", json=body, headers={"Idempotency-Key": new_key()}))
            for extra in ("callback_url", "webhook", "services", "url"):
                body = body_json() | {extra: {"bank-a": lure} if extra == "services" else lure}
                judge(f"body.{extra}", http.post("/transfers", json=body, headers={"Idempotency-Key": new_key()}))
            judge("Idempotency-Key", http.post("/transfers", json=body_json(), headers={"Idempotency-Key": lure}))
            judge(
                "query of a POST",
                http.post(
                    "/transfers",
                    params={"service": lure, "callback": lure, "url": lure},
                    json=body_json(),
                    headers={"Idempotency-Key": new_key()},
                ),
            )
            for path in (f"/transfers/{quote(lure, safe='')}", f"/transfers/{quote(lure, safe='')}/events"):
                judge(f"path {path}", http.get(path))
            for name in ("after", "state", "limit"):
                judge(f"query {name}", http.get("/transfers", params={name: lure}))
            judge("query wait", http.get(f"/transfers/{taken[0] if taken else 'x'}", params={"wait": lure}))
            headers = {
                "Host": lure.removeprefix("http://").split("/")[0] or "x",
                "X-Forwarded-Host": lure,
                "X-Forwarded-For": lure,
                "Forwarded": f'for="{lure}";host="{lure}"',
                "Origin": lure,
                "Referer": lure,
                "X-Original-URL": lure,
                "X-Rewrite-URL": lure,
                "Idempotency-Key": new_key(),
            }
            judge("forwarding headers", http.post("/transfers", json=body_json(), headers=headers))

        valid = httpx.Request("POST", "/", json=body_json()).content
        absolute_key = new_key()
        for request in (
            f"POST http://127.0.0.1:{port}/transfers HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Idempotency-Key: {absolute_key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(valid)}\r\n\r\n",
            f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n",
            f"GET //127.0.0.1:{port}/transfers HTTP/1.1\r\nHost: x\r\n\r\n",
            f"GET http://[::1]:{port}/healthz HTTP/1.1\r\nHost: [::1]:{port}\r\n\r\n",
        ):
            status = raw_request(shared.service.port, request.encode() + (valid if request.startswith("POST") else b""))
            assert status in (0, 200, 201) or 400 <= status < 500, (request, status)
        taken += [t.transaction_id for t in keyed_transfers(shared.service, absolute_key)]

        client = transfers_client(shared.service.url)
        for transaction_id in taken:
            ended = wait_for_end(client, transaction_id)
            assert {ended.source.service, ended.target.service} == {"bank-a", "bank-b"}
            assert {e.service for e in events_of(client, transaction_id) if e.kind is EventKind.ATTEMPT} <= {
                "bank-a",
                "bank-b",
            }
        assert len(refused) > 10 * len(lures), refused
        assert taken, "some requests carry lures only where they are harmless: those must have been taken"
        # Each request was answered and each transfer it took has ended: nothing is left that could still connect.
        assert trap.connections == 2, "only the two probes above"


# -- callers --------------------------------------------------------------------------


def test_with_api_tokens_every_call_but_health_needs_one_valid_bearer_token_and_records_its_caller(
    bank_a: ServerProcess, bank_b: ServerProcess
) -> None:
    tokens = {"payroll": "payroll-secret-" + uuid.uuid4().hex, "shop": "shop-secret-" + uuid.uuid4().hex}
    with TransfersProcess({"bank-a": bank_a.url, "bank-b": bank_b.url}, api_tokens=tokens) as service:
        anonymous = transfers_client(service.url)
        body = transfer_request(ALICE, BOB, 55)
        refused = submit(anonymous, body, "k-anonymous")
        assert refused.status_code == 401
        assert problem_code(refused) == "unauthorized"
        assert refused.headers["www-authenticate"] == "Bearer"
        for answer in (
            list_transfers.sync_detailed(client=anonymous),
            get_transfer.sync_detailed(str(uuid.uuid4()), client=anonymous),
            get_transfer_events.sync_detailed(str(uuid.uuid4()), client=anonymous),
            metrics.sync_detailed(client=anonymous),
        ):
            assert answer.status_code == 401
        for public in ("/healthz", "/readyz"):
            assert httpx.get(f"{service.url}{public}", timeout=10).status_code == 200, public

        secret = tokens["payroll"]
        for authorization in (
            [("Authorization", "Bearer wrong")],
            [("Authorization", f"Bearer {secret}x")],
            [("Authorization", f"Basic {secret}")],
            [("Authorization", secret)],
            [("Authorization", "Bearer")],
            [("Authorization", f"Bearer {secret}"), ("Authorization", f"Bearer {secret}")],
            [("Authorization", f"Bearer {secret}"), ("Authorization", f"Bearer {tokens['shop']}")],
        ):
            forged = httpx.post(
                f"{service.url}/transfers",
                json=body.to_dict(),
                headers=[*authorization, ("Idempotency-Key", "k-forged")],
                timeout=10,
            )
            assert forged.status_code == 401, authorization
            assert problem_code(forged) == "unauthorized"

        payroll = transfers_client(service.url, tokens["payroll"])
        shop = transfers_client(service.url, tokens["shop"])
        by_payroll = submitted(payroll, body, "k-shared")
        by_shop = submitted(shop, transfer_request(BOB, ALICE, 56), "k-shop")
        assert (by_payroll.submitted_by, by_shop.submitted_by) == ("payroll", "shop")
        stolen = submit(shop, body, "k-shared")
        assert stolen.status_code == 422, stolen.content
        assert problem_code(stolen) == "idempotency_key_reused"
        replay = submit(payroll, body, "k-shared")
        assert replay.status_code == 200
        assert isinstance(replay.parsed, Transfer)
        assert replay.parsed.transaction_id == by_payroll.transaction_id
        assert metrics.sync_detailed(client=shop).status_code == 200

        listed = {t.idempotency_key: t.submitted_by for t in every_transfer(shop)}
        assert listed == {"k-shared": "payroll", "k-shop": "shop"}, "nothing refused may have been recorded"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_without_api_tokens_serving_beyond_loopback_is_refused_with_exit_2_and_one_line(
    tmp_path: Path, host: str
) -> None:
    result = saga_cli(
        "serve",
        "--host",
        host,
        "--port",
        "0",
        "--db",
        str(tmp_path / "saga.db"),
        "--service",
        "bank-a=http://127.0.0.1:9",
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert host in result.stderr
    assert "--api-token" in result.stderr
    assert not (tmp_path / "saga.db").exists(), "a refused start must not have opened the log"


def test_without_api_tokens_on_loopback_the_first_line_says_calls_are_unauthenticated(shared: Shared) -> None:
    first = shared.service.log().splitlines()[0]
    assert "unauthenticated" in first, first
    assert "loopback" in first, first


# -- the HTTP edge ----------------------------------------------------------------------


def test_a_body_over_max_body_bytes_is_refused_413_and_records_nothing(shared: Shared, http: httpx.Client) -> None:
    key = new_key()
    padded = httpx.Request("POST", "/", json=body_json()).content + b" " * MAX_BODY_BYTES
    answer = http.post(
        "/transfers", content=padded, headers={"Idempotency-Key": key, "Content-Type": "application/json"}
    )
    assert answer.status_code == 413
    assert problem_code(answer) == "request_too_large"

    def chunks() -> Iterator[bytes]:
        yield padded[:100]
        yield padded[100:]

    # No Content-Length: the body is refused as it streams past the limit.
    streamed = http.post("/transfers", content=chunks(), headers={"Idempotency-Key": key})
    assert streamed.status_code == 413
    assert problem_code(streamed) == "request_too_large"
    assert keyed_transfers(shared.service, key) == []
    taken = http.post("/transfers", json=body_json(), headers={"Idempotency-Key": key})
    assert taken.status_code == 201, "the key was never used, so it is free"


@pytest.mark.parametrize(
    "raw",
    [
        '{"source":{"service":"bank-a","user_id":"alice"},"source":{"service":"bank-a","user_id":"ana"},'
        '"target":{"service":"bank-b","user_id":"bob"},"amount":10}',
        '{"source":{"service":"bank-a","service":"bank-b","user_id":"alice"},'
        '"target":{"service":"bank-b","user_id":"bob"},"amount":10}',
        '{"source":{"service":"bank-a","user_id":"alice"},"target":{"service":"bank-b","user_id":"bob"},'
        '"amount":10,"amount":1000000}',
    ],
    ids=["top level", "nested", "amount"],
)
def test_a_key_repeated_in_the_json_is_refused_422(shared: Shared, http: httpx.Client, raw: str) -> None:
    key = new_key()
    answer = http.post(
        "/transfers", content=raw.encode(), headers={"Idempotency-Key": key, "Content-Type": "application/json"}
    )
    assert answer.status_code == 422
    assert problem_code(answer) == "invalid_request"
    assert keyed_transfers(shared.service, key) == []


@pytest.mark.parametrize(
    ("amount", "taken"),
    [
        ("2500.0", 2500),
        ("1e3", 1000),
        ("2.5E3", 2500),
        ("999.99999999999999999", None),
        ("2500.5", None),
        ('"2500"', None),
        ("true", None),
        ("0", None),
        ("1000000000001", None),
    ],
)
def test_an_amount_is_taken_only_when_it_is_exactly_a_whole_number_in_range(
    http: httpx.Client, amount: str, taken: int | None
) -> None:
    raw = '{"source":{"service":"bank-a","user_id":"alice"},"target":{"service":"bank-b","user_id":"bob"},"amount":%s}'
    answer = http.post(
        "/transfers",
        content=(raw % amount).encode(),
        headers={"Idempotency-Key": new_key(), "Content-Type": "application/json"},
    )
    if taken is None:
        assert answer.status_code == 422, answer.text
        assert problem_code(answer) == "invalid_request"
    else:
        assert answer.status_code == 201, answer.text
        assert answer.json()["amount"] == taken
        assert b'"amount":%d,' % taken in answer.content, "written without a fraction"


# -- kill -9 ----------------------------------------------------------------------------

KILL_TRANSFERS = 200
KILL_AFTER_ANSWERS = 60


@dataclass
class KillRun:
    #: key -> every status its sends were answered with, 0 for a connection lost.
    answers: dict[str, list[int]]
    #: key -> the transfer of the answer that took.
    transfers: dict[str, Transfer]
    lost_while_down: int


async def submit_through_a_kill(
    service: TransfersProcess, plan: list[tuple[str, TransferRequest]], *, concurrency: int = 16
) -> KillRun:
    """Submit the plan; SIGKILL the service once enough are answered; restart it once callers have met it down."""
    run = KillRun({}, {}, 0)
    enough_answered = asyncio.Event()
    met_down = asyncio.Event()
    down = False
    slots = asyncio.Semaphore(concurrency)

    def lost() -> None:
        if down:
            run.lost_while_down += 1
            if run.lost_while_down >= 5:
                met_down.set()

    async with transfers_client(service.url) as client:

        async def one(key: str, body: TransferRequest) -> None:
            async with slots:
                statuses, transfer = await submit_until_answered(client, body, key, within=120, on_lost=lost)
            run.answers[key], run.transfers[key] = statuses, transfer
            if len(run.transfers) >= KILL_AFTER_ANSWERS:
                enough_answered.set()

        async def crash() -> None:
            nonlocal down
            await enough_answered.wait()
            await asyncio.to_thread(service.kill)
            down = True
            await met_down.wait()
            await asyncio.to_thread(service.restart_after_kill)
            down = False

        await asyncio.gather(crash(), *(one(key, body) for key, body in plan))
    return run


async def ends_of(url: str, transaction_ids: list[str]) -> list[Transfer]:
    slots = asyncio.Semaphore(50)
    async with transfers_client(url) as client:

        async def one(transaction_id: str) -> Transfer:
            async with slots:
                return await await_end(client, transaction_id, within=120)

        return list(await asyncio.gather(*(one(tid) for tid in transaction_ids)))


def test_a_transfers_service_killed_mid_batch_and_restarted_loses_no_transfer_and_conserves_money() -> None:
    users_a = {f"a{n}": 50_000 for n in range(8)}
    users_b = {f"b{n}": 50_000 for n in range(8)}
    with (
        ServerProcess(users_a, credit_fault_rate=0.3, fault_seed=21) as bank_a,
        ServerProcess(users_b, credit_fault_rate=0.3, fault_seed=22) as bank_b,
        TransfersProcess({"bank-a": bank_a.url, "bank-b": bank_b.url}) as service,
    ):
        banks = Banks({"bank-a": bank_a.url, "bank-b": bank_b.url})
        before = banks.balances()
        rng = random.Random(2026)
        plan = []
        for n in range(KILL_TRANSFERS):
            a, b = ("bank-a", rng.choice(list(users_a))), ("bank-b", rng.choice(list(users_b)))
            source, target = (a, b) if rng.random() < 0.6 else (b, a)
            # One in twenty asks for more than any account holds: its debit is refused.
            amount = 80_000 if n % 20 == 7 else rng.randint(1, 4_000)
            plan.append((f"kill-{n}-{uuid.uuid4().hex[:8]}", transfer_request(source, target, amount)))

        started = time.monotonic()
        run = asyncio.run(submit_through_a_kill(service, plan))
        assert run.lost_while_down >= 5
        ids = {key: transfer.transaction_id for key, transfer in run.transfers.items()}
        assert sorted(ids) == sorted(key for key, _ in plan)
        assert len(set(ids.values())) == KILL_TRANSFERS, "two keys share a transfer"

        ended = asyncio.run(ends_of(service.url, list(ids.values())))
        elapsed = time.monotonic() - started
        states = Counter(transfer.state for transfer in ended)
        assert set(states) <= ENDS, states

        client = transfers_client(service.url)
        # The same keys sent again, after it all: each names its one transfer for ever.
        for key, body in plan:
            again = submit(client, body, key)
            assert again.status_code == 200, again.content
            assert isinstance(again.parsed, Transfer)
            assert again.parsed.transaction_id == ids[key]
        listed = every_transfer(client)
        assert len(listed) == KILL_TRANSFERS, "a transfer no answer named, or one named twice"
        assert {t.idempotency_key: t.transaction_id for t in listed} == ids

        after = banks.balances()
        total_before, total_after = verify.total(before), verify.total(after)
        assert total_after == total_before
        assert banks.judge(before, ended, banks.trails(ended)) == []
        assert story_mismatches_of(client, banks, ended) == []
        workers = {
            event.worker
            for transfer in ended
            for event in events_of(client, transfer.transaction_id)
            if event.kind is EventKind.CLAIM
        }
        assert len(workers) == 2, "the killed service and the restarted one both drove sagas"
        replayed = sum(1 for statuses in run.answers.values() if statuses[-1] == 200)
        print(
            f"\nkill -9: {KILL_TRANSFERS} transfers in {elapsed:.1f} s, { {s.value: n for s, n in states.items()} }, "
            f"{run.lost_while_down} sends lost while down, {replayed} answered as replays of a lost answer, "
            f"money {total_before} before, {total_after} after"
        )


# -- readiness, and sagas driven elsewhere, on PostgreSQL ---------------------------------


def database_name(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


async def admin(statement: str) -> None:
    connection = await asyncpg.connect(server_dsn(), timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def refuse_connections(database: str) -> None:
    await admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    await admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'")


def readiness(url: str) -> httpx.Response:
    return httpx.get(f"{url}/readyz", timeout=30)


def poll_readiness(url: str, status: int, *, within: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + within
    while (answer := readiness(url)).status_code != status:
        assert time.monotonic() < deadline, f"/readyz still {answer.status_code} after {within:g} s"
        time.sleep(0.05)
    return answer


def test_readyz_is_503_while_the_postgresql_log_refuses_connections_and_the_service_drives_again_after(
    bank_a: ServerProcess, bank_b: ServerProcess, pg_dsn: str
) -> None:
    database = database_name(pg_dsn)
    with TransfersProcess(
        {"bank-a": bank_a.url, "bank-b": bank_b.url}, db=pg_dsn, extra_args=["--poll-seconds", "0.2"]
    ) as service:
        client = transfers_client(service.url)
        assert readiness(service.url).status_code == 200
        assert wait_for_end(client, submitted(client, transfer_request(ALICE, BOB, 5), new_key()).transaction_id)
        try:
            asyncio.run(refuse_connections(database))
            unready = poll_readiness(service.url, 503)
            assert problem_code(unready) == "log_unavailable"
            assert unready.headers["retry-after"] == "1"
            during = submit(client, transfer_request(ALICE, BOB, 6), "k-during-outage")
            assert during.status_code == 503
            assert problem_code(during) == "log_unavailable"
            # The outage outlasts several of the driver's 0.2 s polls, so the driver meets it too.
            outage_ends = time.monotonic() + 1.5
            while time.monotonic() < outage_ends:
                assert readiness(service.url).status_code == 503
                time.sleep(0.1)
        finally:
            asyncio.run(admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
        assert poll_readiness(service.url, 200).json() == {"status": "ok"}
        again = submit(client, transfer_request(ALICE, BOB, 6), "k-during-outage")
        assert again.status_code == 201, "the refused submission recorded nothing"
        assert isinstance(again.parsed, Transfer)
        ended = wait_for_end(client, again.parsed.transaction_id, within=30)
        assert ended.state in ENDS, "the service must drive sagas again once its log is back"


def test_serve_no_drive_on_postgresql_leaves_the_sagas_to_a_separate_worker(
    bank_a: ServerProcess, bank_b: ServerProcess, pg_dsn: str, tmp_path: Path
) -> None:
    services = {"bank-a": bank_a.url, "bank-b": bank_b.url}
    banks = Banks(services)
    with TransfersProcess(services, db=pg_dsn, extra_args=["--no-drive"]) as service:
        client = transfers_client(service.url)
        made = [submitted(client, transfer_request(ALICE, BOB, 30 + n), new_key()) for n in range(4)]
        made.append(submitted(client, transfer_request(("bank-b", "poor"), ALICE, 500), new_key()))
        assert {t.state for t in made} == {TransferState.PENDING}
        assert read(client, made[0].transaction_id, wait=1).state is TransferState.PENDING, "no one drives it"
        assert "not driving sagas" in service.log().splitlines()[0]

        flags = [arg for name, url in services.items() for arg in ("--service", f"{name}={url}")]
        with (tmp_path / "worker.err").open("wb") as stderr:
            worker = subprocess.Popen(
                [sys.executable, "-m", "saga", "worker", "--db", pg_dsn, "--worker-id", "outside-worker", *flags],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            ended = [wait_for_end(client, t.transaction_id, within=30) for t in made]
        finally:
            worker.terminate()
            worker.wait(timeout=30)
        assert [t.state for t in ended[-1:]] == [TransferState.FAILED]
        assert {t.state for t in ended} <= ENDS
        for transfer in ended:
            claims = [e.worker for e in events_of(client, transfer.transaction_id) if e.kind is EventKind.CLAIM]
            assert claims == ["outside-worker"]
        assert story_mismatches_of(client, banks, ended) == []


def test_serve_no_drive_on_a_sqlite_log_is_refused_with_exit_2(tmp_path: Path) -> None:
    result = saga_cli(
        "serve",
        "--no-drive",
        "--port",
        "0",
        "--db",
        str(tmp_path / "saga.db"),
        "--service",
        "bank-a=http://127.0.0.1:9",
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--no-drive" in result.stderr
