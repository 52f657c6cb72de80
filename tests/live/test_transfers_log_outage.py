"""The transfers service while its PostgreSQL saga log keeps losing its connections: 503, never 500, and back after.

Every backend of the log's database is terminated again and again while
callers submit, read and list transfers and ask for readiness. The service
must answer every request it cannot serve with its documented 503
(``log_unavailable``, problem+json), fail /readyz meanwhile, and, once the
terminations stop, serve and drive sagas again without a restart: every
transfer it took ends, and the banks' money is where the sagas say.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import asyncpg
import httpx

from evaluation.scratch_database import server_dsn
from generated_client.transfers.models import Transfer
from saga.service.process import TransfersProcess
from server.process import ServerProcess
from tests.support.transfers import Banks, every_transfer, transfers_client, wait_for_end

BANK_A = {"alice": 1_000_000, "amir": 1_000_000}
BANK_B = {"bob": 1_000_000, "bea": 1_000_000}
OUTAGE_SECONDS = 6.0
CALLERS = 12


@dataclass
class Seen:
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    #: Answers that break the contract: a 500, or a 503 that is not the documented problem.
    wrong: list[str] = field(default_factory=list)
    #: Idempotency key -> the body sent under it, for every submission.
    bodies: dict[str, dict[str, object]] = field(default_factory=dict)
    transaction_ids: list[str] = field(default_factory=list)


def judge(seen: Seen, operation: str, answer: httpx.Response) -> None:
    seen.statuses[operation, answer.status_code] += 1
    if answer.status_code == 503:
        problem = answer.json()
        if answer.headers.get("content-type") != "application/problem+json" or problem.get("code") != (
            "log_unavailable"
        ):
            seen.wrong.append(f"{operation}: 503 {answer.headers.get('content-type')} {answer.text[:200]}")
    elif answer.status_code >= 500 or answer.status_code not in (200, 201):
        seen.wrong.append(f"{operation}: {answer.status_code} {answer.text[:300]}")


async def caller(number: int, url: str, seen: Seen, until: float) -> None:
    pairs = itertools.cycle([("bank-a", "alice", "bank-b", "bob"), ("bank-b", "bea", "bank-a", "amir")])
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for round_ in itertools.count():
            if time.monotonic() >= until:
                return
            source_service, source, target_service, target = next(pairs)
            key = f"outage-{number}-{round_}-{uuid.uuid4().hex[:8]}"
            body: dict[str, object] = {
                "source": {"service": source_service, "user_id": source},
                "target": {"service": target_service, "user_id": target},
                "amount": 1 + (number * 7 + round_) % 50,
            }
            seen.bodies[key] = body
            answer = await http.post("/transfers", json=body, headers={"Idempotency-Key": key})
            judge(seen, "createTransfer", answer)
            if answer.status_code in (200, 201):
                seen.transaction_ids.append(answer.json()["transaction_id"])
            if seen.transaction_ids:
                transaction_id = seen.transaction_ids[(number + round_) % len(seen.transaction_ids)]
                judge(seen, "getTransfer", await http.get(f"/transfers/{transaction_id}"))
                judge(seen, "getTransferEvents", await http.get(f"/transfers/{transaction_id}/events"))
            judge(seen, "listTransfers", await http.get("/transfers", params={"limit": "5"}))
            readiness = await http.get("/readyz")
            judge(seen, "readyz", readiness)


async def terminate_backends(database: str, until: float) -> int:
    admin = await asyncpg.connect(server_dsn(), timeout=10)
    terminated = 0
    try:
        while time.monotonic() < until:
            rows = await admin.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
            terminated += len(rows)
            await asyncio.sleep(0.03)
    finally:
        await admin.close()
    return terminated


async def under_outage(url: str, database: str) -> tuple[Seen, int]:
    seen = Seen()
    until = time.monotonic() + OUTAGE_SECONDS
    terminating = asyncio.create_task(terminate_backends(database, until))
    await asyncio.gather(*(caller(n, url, seen, until) for n in range(CALLERS)))
    return seen, await terminating


def resubmit_until_taken(url: str, key: str, body: dict[str, object], within: float = 60) -> str:
    """The same key and body again, as a caller that got a 503 does, until the service takes it."""
    deadline = time.monotonic() + within
    with httpx.Client(base_url=url, timeout=30) as http:
        while True:
            answer = http.post("/transfers", json=body, headers={"Idempotency-Key": key})
            if answer.status_code in (200, 201):
                transaction_id: str = answer.json()["transaction_id"]
                return transaction_id
            assert answer.status_code == 503, answer.text
            assert time.monotonic() < deadline, f"{key} still refused after {within:g} s"
            time.sleep(0.2)


def test_serve_answers_503_never_500_while_its_log_connections_are_terminated_and_recovers_without_a_restart(
    pg_dsn: str,
) -> None:
    database = urlsplit(pg_dsn).path.lstrip("/")
    with ServerProcess(BANK_A) as bank_a, ServerProcess(BANK_B) as bank_b:
        services = {"bank-a": bank_a.url, "bank-b": bank_b.url}
        banks = Banks(services)
        before = banks.balances()
        with TransfersProcess(services, db=pg_dsn, extra_args=["--poll-seconds", "0.2"]) as service:
            pid = service.pid
            seen, terminated = asyncio.run(under_outage(service.url, database))
            assert terminated > 0
            assert seen.wrong == [], seen.wrong[:10]
            assert not [key for key in seen.statuses if key[1] == 500]
            assert sum(count for (_, status), count in seen.statuses.items() if status == 503) > 0, (
                "the outage was never felt: the test proves nothing",
                seen.statuses,
            )

            # Back without a restart: ready, and every submission taken, once.
            deadline = time.monotonic() + 30
            while httpx.get(f"{service.url}/readyz", timeout=10).status_code != 200:
                assert time.monotonic() < deadline, "/readyz never recovered"
                time.sleep(0.1)
            assert service.pid == pid
            taken = {key: resubmit_until_taken(service.url, key, body) for key, body in seen.bodies.items()}
            assert len(set(taken.values())) == len(taken), "one transfer per key"
            assert set(seen.transaction_ids) <= set(taken.values())

            client = transfers_client(service.url)
            ended = [wait_for_end(client, transaction_id, within=90) for transaction_id in taken.values()]
            assert all(isinstance(transfer, Transfer) for transfer in ended)
            everything = every_transfer(client)
            assert len(everything) == len(taken)
            assert banks.judge(before, everything, banks.trails(everything)) == []
            assert "unexpected error" not in service.log()
