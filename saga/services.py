"""Reads from the accounts services, through the generated client: balances and audit trails.

A service is given as one URL or several (replicas over one database). A read
goes to one of them, and moves on to the next only if it cannot connect; the
results are keyed by the service's identity (:func:`saga.records.service_id`),
so the replicas of one service are read and counted once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence

import httpx

from generated_client.accounts.api.accounts import get_transaction, list_accounts
from generated_client.accounts.models import AccountList, TransactionTrail
from saga.orchestrator import Orchestrator
from saga.records import as_urls, service_id
from saga.replicas import describe, first_reachable
from saga.steps import ledger_position
from saga.verify import Balances, SagaEnd, TrailItem


class ServiceUnavailable(Exception):
    """An accounts service could not be read."""


def _correlation_id() -> str:
    return f"read-{uuid.uuid4()}"


async def balances(orchestrator: Orchestrator, service: str | Iterable[str]) -> dict[str, int]:
    """user_id -> balance, for every account on one service.

    The read also tells the service's ledger position: a ledger that went
    back in time is quarantined here (LedgerWentBack), before any saga runs.
    """
    return {account.user_id: account.balance for account in (await _accounts(orchestrator, service)).accounts}


async def _accounts(orchestrator: Orchestrator, service: str | Iterable[str]) -> AccountList:
    urls = as_urls(service)
    where = ",".join(urls)
    mark = await orchestrator.watch.mark(service_id(urls))
    try:
        response = await first_reachable(
            urls,
            orchestrator.replicas,
            lambda url: list_accounts.asyncio_detailed(
                client=orchestrator.client_for(url), transaction_id=_correlation_id()
            ),
        )
    except Exception as error:
        reason = describe(error) if isinstance(error, httpx.TransportError) else str(error) or type(error).__name__
        raise ServiceUnavailable(f"cannot reach the accounts service at {where}: {reason}") from error
    answer = response.parsed
    if not isinstance(answer, AccountList):
        detail = getattr(answer, "detail", "no readable answer")
        raise ServiceUnavailable(f"the accounts service at {where} refused to list accounts: {detail}")
    ledger_id, position = response.headers.get("ledger-id"), ledger_position(response.headers)
    if ledger_id is not None and position is not None:
        await orchestrator.watch.observe(service_id(urls), ledger_id, position, mark, None)
    return answer


async def opened_between(
    orchestrator: Orchestrator, services: Iterable[str | Iterable[str]], before: Balances, after: Balances
) -> dict[str, dict[str, int]]:
    """The opening balance of each account in ``after`` that ``before`` lacks, by service: money brought in.

    Only a service with such an account is read again; an account opened
    after ``after`` was read is left out, as ``after`` does not hold it.
    """
    opened: dict[str, dict[str, int]] = {}
    for service in services:
        urls = as_urls(service)
        key = service_id(urls)
        new = set(after.get(key, {})) - set(before.get(key, {}))
        if not new or key in opened:
            continue
        listed = await _accounts(orchestrator, urls)
        opened[key] = {
            account.user_id: account.opening_balance for account in listed.accounts if account.user_id in new
        }
    return opened


async def snapshot(orchestrator: Orchestrator, services: Iterable[str | Iterable[str]]) -> dict[str, dict[str, int]]:
    """Service identity -> user_id -> balance; each service read once, however many times it is listed."""
    by_service: dict[str, tuple[str, ...]] = {}
    for service in services:
        urls = as_urls(service)
        by_service.setdefault(service_id(urls), urls)
    results = await asyncio.gather(*(balances(orchestrator, urls) for urls in by_service.values()))
    return dict(zip(by_service, results, strict=True))


async def trail(orchestrator: Orchestrator, service: str | Iterable[str], transaction_id: str) -> list[TrailItem]:
    urls = as_urls(service)
    answer = await first_reachable(
        urls,
        orchestrator.replicas,
        lambda url: get_transaction.asyncio(
            transaction_id, client=orchestrator.client_for(url), transaction_id_header=_correlation_id()
        ),
    )
    if not isinstance(answer, TransactionTrail):
        raise ServiceUnavailable(f"cannot read the trail of {transaction_id} at {','.join(urls)}")
    return [
        TrailItem(
            entry.operation.value,
            entry.user_id,
            entry.amount,
            entry.outcome.value if isinstance(entry.outcome, str) else None,
        )
        for entry in answer.entries
    ]


async def trails(
    orchestrator: Orchestrator, sagas: Sequence[SagaEnd], concurrency: int = 32
) -> dict[tuple[str, str], list[TrailItem]]:
    """The audit trail of every saga on each service it touched, keyed by (service identity, transaction_id)."""
    slots = asyncio.Semaphore(concurrency)
    to_read: dict[tuple[str, str], tuple[str, ...]] = {}
    for saga in sagas:
        for account in (saga.source, saga.target):
            to_read.setdefault((account.service_url, saga.transaction_id), account.urls)

    async def fetch(urls: tuple[str, ...], transaction_id: str) -> list[TrailItem]:
        async with slots:
            return await trail(orchestrator, urls, transaction_id)

    results = await asyncio.gather(*(fetch(urls, key[1]) for key, urls in to_read.items()))
    return dict(zip(to_read, results, strict=True))
