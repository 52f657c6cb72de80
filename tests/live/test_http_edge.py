"""The HTTP edge of a real ``python -m server``: body and header limits, ambiguous input, auth, slow clients,
connection limit; and the header limit of a real ``python -m saga serve``, which shares the edge."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from saga.service.process import TransfersProcess
from server.process import ServerProcess
from tests.conftest import StartServer
from tests.support.ports import dead_url

ACCOUNTS = {"alice": 10_000, "bob": 10_000}


def connect(server: ServerProcess) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection


def read_response(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body, read off a raw socket."""
    (response,) = read_responses(connection, 1)
    return response


def read_responses(connection: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` pipelined responses; one recv may hold several of them, so the bytes are kept between them."""
    responses: list[tuple[int, dict[str, str], bytes]] = []
    data = b""
    while len(responses) < count:
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before a full response: {data!r}")
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)
        }
        length = int(headers.get("content-length", "0"))
        while len(data) < length:
            chunk = connection.recv(65536)
            if not chunk:
                break
            data += chunk
        body, data = data[:length], data[length:]
        responses.append((int(status_line.split()[1]), headers, body))
    return responses


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
    assert headers["server-timing"] == "store;dur=0.000, total;dur=0.000"
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "service_overloaded"
    # Once the held connections are gone, the service answers again.
    answer = httpx.get(f"{server.url}/accounts", headers={"transaction_id": "read"})
    assert answer.status_code == 200


# -- header size ------------------------------------------------------------------------------------

#: The default of --max-header-bytes.
MAX_HEADER_BYTES = 16 * 1024
#: What one flooding client would send if the service never cut it off.
FLOOD_BYTES = 100 * 1024 * 1024
FLOOD_CLIENTS = 16
#: The growth of the service's resident memory that the flood may cause.
FLOOD_MEMORY_SLACK = 50 * 1024 * 1024


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def padded_get(path: str, total: int, extra: str = "") -> bytes:
    """A GET whose request line and headers, blank line included, are exactly ``total`` bytes."""
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\ntransaction_id: read\r\n{extra}X-Padding: "
    padding = total - len(head) - len("\r\n\r\n")
    assert padding >= 0
    request = (head + "p" * padding + "\r\n\r\n").encode()
    assert len(request) == total
    return request


def assert_header_refused(connection: socket.socket) -> dict[str, str]:
    """The 431 problem, then the end of the connection; the answer's headers."""
    status, headers, body = read_response(connection)
    assert status == 431
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    problem = json.loads(body)
    assert problem["code"] == "request_header_too_large"
    assert problem["status"] == 431
    assert closed_within(connection, 10) is not None, "the connection stayed open after the 431"
    return headers


def test_a_20_kib_header_is_refused_with_431_and_the_service_keeps_answering(server: ServerProcess) -> None:
    with closing(connect(server)) as connection:
        connection.sendall(padded_get("/accounts", 20 * 1024))
        headers = assert_header_refused(connection)
    assert "ledger-id" in headers
    answer = httpx.get(f"{server.url}/accounts", headers={"transaction_id": "read"})
    assert answer.status_code == 200
    assert answer.headers["ledger-id"] == headers["ledger-id"]


def test_a_header_section_of_exactly_the_limit_is_served_and_one_byte_more_is_refused(
    start_server: StartServer,
) -> None:
    server = start_server(ACCOUNTS, extra_args=["--max-header-bytes", "1024"])
    with closing(connect(server)) as connection:
        connection.sendall(padded_get("/accounts", 1024))
        assert read_response(connection)[0] == 200
    with closing(connect(server)) as connection:
        connection.sendall(padded_get("/accounts", 1025))
        assert_header_refused(connection)


def test_the_limit_is_per_request_not_per_connection(start_server: StartServer) -> None:
    server = start_server(ACCOUNTS, extra_args=["--max-header-bytes", "1024"])
    with closing(connect(server)) as connection:
        for _ in range(5):
            # In two reads, so that the service counts the unfinished first part.
            request = padded_get("/accounts", 1000)
            connection.sendall(request[:900])
            time.sleep(0.05)
            connection.sendall(request[900:])
            assert read_response(connection)[0] == 200
        # Pipelined: two requests' headers in one write, more than the limit together.
        connection.sendall(padded_get("/accounts", 1000) * 2)
        assert [status for status, _, _ in read_responses(connection, 2)] == [200, 200]


def test_a_body_does_not_count_against_the_header_limit(start_server: StartServer) -> None:
    server = start_server(ACCOUNTS, extra_args=["--max-header-bytes", "1024"])
    padded = (json.dumps({"user_id": "alice", "amount": 5}) + " " * 30_000).encode()
    with closing(connect(server)) as connection:
        connection.sendall(raw_debit(padded, "t-long-body"))
        status, _, body = read_response(connection)
    assert status == 200, body
    assert balance(server) == ACCOUNTS["alice"] - 5


def send_until_cut_off(connection: socket.socket, fill: bytes, seconds: float = 60) -> int | None:
    """Bytes of ``fill`` sent before the service cut the connection off.

    None if it took all of FLOOD_BYTES, or kept taking them for ``seconds``.
    """
    chunk = fill * 65536
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        while sent < FLOOD_BYTES and time.monotonic() < deadline:
            connection.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        return sent
    return None


@dataclass
class Flood:
    """What one client streaming a header that never ends saw."""

    #: Bytes sent before the service cut the connection off; None if it never did.
    sent: int | None = None
    #: The answer's status, or None when the connection was closed without one.
    status: int | None = None
    error: str | None = None


def stream_endless_header(port: int, flood: Flood, start: threading.Event) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=15) as connection:
            start.wait()
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Flood: ")
            flood.sent = send_until_cut_off(connection, b"f")
            try:
                flood.status = read_response(connection)[0]
            except (ConnectionError, TimeoutError):
                flood.status = None
    except OSError as error:
        flood.error = repr(error)


def flood_with_endless_headers(server: ServerProcess, normal_read: str) -> None:
    """Sixteen clients stream endless headers: each is cut off, memory stays flat, normal reads go on."""
    with httpx.Client(base_url=server.url, headers={"transaction_id": "read"}) as client:
        for _ in range(20):
            assert client.get(normal_read).status_code == 200
        idle = resident_bytes(server.pid)
        floods = [Flood() for _ in range(FLOOD_CLIENTS)]
        start = threading.Event()
        threads = [
            threading.Thread(target=stream_endless_header, args=(server.port, flood, start), daemon=True)
            for flood in floods
        ]
        for thread in threads:
            thread.start()
        start.set()
        peak = idle
        reads = 0
        deadline = time.monotonic() + 120
        while any(thread.is_alive() for thread in threads) and time.monotonic() < deadline:
            peak = max(peak, resident_bytes(server.pid))
            assert client.get(normal_read).status_code == 200
            reads += 1
            time.sleep(0.02)
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        peak = max(peak, resident_bytes(server.pid))
        assert not any(thread.is_alive() for thread in threads), "some flooding clients were never cut off"
        for flood in floods:
            assert flood.error is None, flood.error
            assert flood.sent is not None, "the service kept reading a client's endless header"
            assert flood.status in (431, None), flood
        assert peak - idle < FLOOD_MEMORY_SLACK, f"resident memory grew from {idle:,} to {peak:,} bytes"
        assert reads > 0
        assert client.get(normal_read).status_code == 200


def test_sixteen_clients_streaming_endless_headers_are_cut_off_and_memory_stays_flat(server: ServerProcess) -> None:
    flood_with_endless_headers(server, "/accounts")


def test_endless_trailers_after_a_chunked_body_lose_the_connection(start_server: StartServer) -> None:
    # A body deadline longer than the test may take: only the limit can cut the client off.
    server = start_server(ACCOUNTS, extra_args=["--body-timeout", "600"])
    body = json.dumps({"user_id": "alice", "amount": 9}).encode()
    head = (
        b"POST /debit HTTP/1.1\r\nHost: x\r\ntransaction_id: t-trailers\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with closing(connect(server)) as connection:
        # The whole body, its last chunk, and then a trailer field that never ends.
        connection.sendall(head + b"%x\r\n%s\r\n0\r\nX-Trailer: " % (len(body), body))
        sent = send_until_cut_off(connection, b"t")
    assert sent is not None, "the service kept reading the trailer"
    assert balance(server) == ACCOUNTS["alice"]


# -- the transfers service's header limit ---------------------------------------------------------


@pytest.fixture
def transfers_service() -> Iterator[TransfersProcess]:
    # Its accounts services are never called here: a name is all it needs.
    with TransfersProcess({"bank-a": dead_url()}) as service:
        yield service


def test_the_transfers_service_refuses_a_20_kib_header_with_431_and_keeps_answering(
    transfers_service: TransfersProcess,
) -> None:
    with closing(connect(transfers_service)) as connection:
        connection.sendall(padded_get("/transfers", 20 * 1024))
        assert_header_refused(connection)
    answer = httpx.get(f"{transfers_service.url}/transfers")
    assert answer.status_code == 200
    assert answer.json()["transfers"] == []


def test_the_transfers_service_cuts_off_sixteen_endless_headers_and_memory_stays_flat(
    transfers_service: TransfersProcess,
) -> None:
    flood_with_endless_headers(transfers_service, "/transfers")
