"""The HTTP edge of a real ``python -m server``: body limits, ambiguous input, auth, slow clients, connection limit."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing

import httpx
import pytest

from server.process import ServerProcess
from tests.conftest import StartServer

pytestmark = pytest.mark.integration

ACCOUNTS = {"alice": 10_000, "bob": 10_000}


def connect(server: ServerProcess) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection


def read_response(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body, read off a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def closed_within(connection: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``connection``, or None if it stayed open for ``seconds``."""
    started = time.monotonic()
    connection.settimeout(seconds)
    try:
        while connection.recv(65536):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def balance(server: ServerProcess, user_id: str = "alice") -> int:
    answer = httpx.get(f"{server.url}/accounts/{user_id}", headers={"transaction_id": "read"})
    value = answer.json()["balance"]
    assert isinstance(value, int)
    return value


def raw_debit(body: bytes, transaction_id: str = "t-raw", extra: str = "") -> bytes:
    return (
        f"POST /debit HTTP/1.1\r\nHost: x\r\ntransaction_id: {transaction_id}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    return start_server(ACCOUNTS)


# -- body size --------------------------------------------------------------------------------------


def test_a_declared_body_over_the_limit_is_refused_before_any_of_it_is_sent(server: ServerProcess) -> None:
    with closing(connect(server)) as connection:
        connection.sendall(
            b"POST /debit HTTP/1.1\r\nHost: x\r\ntransaction_id: t-big\r\n"
            b"Content-Type: application/json\r\nContent-Length: 300000000\r\n\r\n"
        )
        status, headers, body = read_response(connection)
    assert status == 413
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "request_too_large"
    assert balance(server) == ACCOUNTS["alice"]


def test_a_streamed_body_is_refused_once_it_passes_the_limit_and_the_rest_is_never_read(
    start_server: StartServer,
) -> None:
    server = start_server(ACCOUNTS, extra_args=["--max-body-bytes", "1024"])
    with closing(connect(server)) as connection:
        connection.sendall(
            b"POST /debit HTTP/1.1\r\nHost: x\r\ntransaction_id: t-chunked\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b" " * 512
        for _ in range(3):
            connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        # The terminating chunk is never sent: the answer must not wait for it.
        status, _, body = read_response(connection)
    assert status == 413
    assert json.loads(body)["code"] == "request_too_large"


def test_a_body_within_the_limit_is_served(start_server: StartServer) -> None:
    server = start_server(ACCOUNTS, extra_args=["--max-body-bytes", "1024"])
    padded = json.dumps({"user_id": "alice", "amount": 5}) + " " * 900
    answer = httpx.post(
        f"{server.url}/debit", content=padded, headers={"transaction_id": "t-pad", "content-type": "application/json"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["balance"] == ACCOUNTS["alice"] - 5


# -- ambiguous input -------------------------------------------------------------------------------


def test_two_transaction_id_headers_are_refused_and_change_nothing(server: ServerProcess) -> None:
    body = json.dumps({"user_id": "alice", "amount": 7}).encode()
    with closing(connect(server)) as connection:
        connection.sendall(raw_debit(body, "t-first", extra="transaction_id: t-second\r\n"))
        status, _, answer = read_response(connection)
    problem = json.loads(answer)
    assert status == 400
    assert problem["code"] == "invalid_transaction_id"
    assert "more than one" in problem["detail"]
    assert balance(server) == ACCOUNTS["alice"]
    trail = httpx.get(f"{server.url}/transactions/t-first", headers={"transaction_id": "read"}).json()
    assert trail["entries"] == []


@pytest.mark.parametrize(
    "text",
    [
        '{"user_id": "alice", "amount": 1, "amount": 7}',
        '{"user_id": "alice", "user_id": "bob", "amount": 7}',
        '{"user_id": "alice", "amount": 999.99999999999999999}',
        '{"user_id": "alice", "amount": 1000.0000000000000001}',
        '{"user_id": "alice", "amount": NaN}',
        '{"user_id": "alice", "amount": Infinity}',
        '{"user_id": "alice", "amount": 1e999999999}',
    ],
)
def test_an_ambiguous_body_is_refused_with_422_and_changes_nothing(server: ServerProcess, text: str) -> None:
    answer = httpx.post(
        f"{server.url}/debit", content=text, headers={"transaction_id": "t-amb", "content-type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "invalid_request"
    assert balance(server) == ACCOUNTS["alice"]
    assert balance(server, "bob") == ACCOUNTS["bob"]


@pytest.mark.parametrize(("text", "amount"), [("2500.0", 2500), ("1e3", 1000), ("25E1", 250), ("7", 7)])
def test_an_amount_whose_exact_value_is_integral_is_accepted(server: ServerProcess, text: str, amount: int) -> None:
    answer = httpx.post(
        f"{server.url}/debit",
        content='{"user_id": "alice", "amount": ' + text + "}",
        headers={"transaction_id": f"t-{text}", "content-type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["amount"] == amount
    assert balance(server) == ACCOUNTS["alice"] - amount


# -- authorization --------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_matched_without_regard_to_case(start_server: StartServer, scheme: str) -> None:
    server = start_server(ACCOUNTS, token="s3cret")
    answer = httpx.get(
        f"{server.url}/accounts", headers={"transaction_id": "read", "Authorization": f"{scheme} s3cret"}
    )
    assert answer.status_code == 200


def test_the_token_itself_is_matched_exactly(start_server: StartServer) -> None:
    server = start_server(ACCOUNTS, token="s3cret")
    answer = httpx.get(f"{server.url}/accounts", headers={"transaction_id": "read", "Authorization": "Bearer S3CRET"})
    assert answer.status_code == 401


def test_two_authorization_headers_are_refused_even_when_one_is_right(start_server: StartServer) -> None:
    server = start_server(ACCOUNTS, token="s3cret")
    body = json.dumps({"user_id": "alice", "amount": 3}).encode()
    with closing(connect(server)) as connection:
        connection.sendall(
            raw_debit(body, "t-auth", extra="Authorization: Bearer s3cret\r\nAuthorization: Bearer other\r\n")
        )
        status, _, answer = read_response(connection)
    assert status == 401
    assert json.loads(answer)["code"] == "unauthorized"
    listing = httpx.get(
        f"{server.url}/accounts/alice", headers={"transaction_id": "r", "Authorization": "Bearer s3cret"}
    )
    assert listing.json()["balance"] == ACCOUNTS["alice"]


# -- slow and idle clients ----------------------------------------------------------------------


@pytest.fixture
def impatient_server(start_server: StartServer) -> ServerProcess:
    return start_server(
        ACCOUNTS, extra_args=["--header-timeout", "1", "--body-timeout", "1", "--keep-alive-timeout", "1"]
    )


@pytest.fixture
def idle_connections(impatient_server: ServerProcess) -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        yield [stack.enter_context(closing(connect(impatient_server))) for _ in range(50)]


def test_fifty_idle_connections_neither_block_other_clients_nor_stay_open(
    impatient_server: ServerProcess, idle_connections: list[socket.socket]
) -> None:
    started = time.monotonic()
    with httpx.Client(base_url=impatient_server.url) as client:
        for number in range(20):
            answer = client.post(
                "/debit", json={"user_id": "alice", "amount": 1}, headers={"transaction_id": f"t-busy-{number}"}
            )
            assert answer.status_code == 200
    # Generous slack: the machine is shared. The header timeout is 1 s.
    assert time.monotonic() - started < 10
    waits = [closed_within(connection, 15) for connection in idle_connections]
    assert None not in waits, "some idle connections were never closed"


def test_headers_sent_too_slowly_lose_the_connection(impatient_server: ServerProcess) -> None:
    with closing(connect(impatient_server)) as connection:
        connection.sendall(b"GET /accounts HTTP/1.1\r\nHost: x\r\n")
        waited = closed_within(connection, 15)
    assert waited is not None


def test_a_body_sent_too_slowly_loses_the_connection(impatient_server: ServerProcess) -> None:
    with closing(connect(impatient_server)) as connection:
        connection.sendall(
            b"POST /debit HTTP/1.1\r\nHost: x\r\ntransaction_id: t-slow\r\n"
            b"Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{"
        )
        waited = closed_within(connection, 15)
    assert waited is not None
    assert balance(impatient_server) == ACCOUNTS["alice"]


def test_an_idle_keep_alive_connection_is_closed_after_its_answer(impatient_server: ServerProcess) -> None:
    with closing(connect(impatient_server)) as connection:
        connection.sendall(b"GET /accounts HTTP/1.1\r\nHost: x\r\ntransaction_id: read\r\n\r\n")
        status, _, _ = read_response(connection)
        waited = closed_within(connection, 15)
    assert status == 200
    assert waited is not None


def test_past_the_connection_limit_a_new_connection_is_answered_503_with_retry_after(
    start_server: StartServer,
) -> None:
    server = start_server(ACCOUNTS, extra_args=["--max-connections", "5"])
    with ExitStack() as stack:
        held = [stack.enter_context(closing(connect(server))) for _ in range(5)]
        # Let the server accept the held connections before the one that overflows.
        for connection in held:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(connection)[0] == 200
        with closing(connect(server)) as extra:
            extra.sendall(b"GET /accounts HTTP/1.1\r\nHost: x\r\ntransaction_id: read\r\n\r\n")
            status, headers, body = read_response(extra)
    assert status == 503
    assert headers["retry-after"] == "1"
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "service_overloaded"
    # Once the held connections are gone, the service answers again.
    answer = httpx.get(f"{server.url}/accounts", headers={"transaction_id": "read"})
    assert answer.status_code == 200
