"""Reads from the accounts services, through the generated client: balances and audit trails.

A service is given as one URL or several (replicas over one database). A read
goes to one of them, and moves on to the next only if it cannot connect; the
results are keyed by the service's identity (:func:`saga.records.service_id`),
so the replicas of one service are read and counted once.

The reads go through a :class:`~saga.clients.ServiceClients`: an
orchestrator's own (``orchestrator.clients``, with its ``watch`` of the
ledgers), or those of a reader that drives no saga.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence

import httpx

from generated_client.accounts.api.accounts import get_transaction, list_accounts
from generated_client.accounts.models import AccountList, TransactionTrail
from saga.clients import ServiceClients
from saga.ledger_watch import LedgerWatch
from saga.records import as_urls, service_id
from saga.replicas import describe, first_reachable
from saga.steps import ledger_position
from saga.verify import Balances, SagaEnd, TrailItem


class ServiceUnavailable(Exception):
    """An accounts service could not be read."""


def _correlation_id() -> str:
    return f"read-{uuid.uuid4()}"


class Snapshot(dict[str, dict[str, int]]):
    """Service identity -> user_id -> balance, as read once; and each account's opening balance, by service.

    The openings come with the same listing, so what was opened between two
    snapshots is known without reading the services again (:func:`opened_between`).
    """

    def __init__(self, balances: dict[str, dict[str, int]], openings: dict[str, dict[str, int]]) -> None:
        super().__init__(balances)
        self.openings = openings


async def balances(
    clients: ServiceClients, service: str | Iterable[str], watch: LedgerWatch | None = None
) -> dict[str, int]:
    """user_id -> balance, for every account on one service.

    The read also tells the service's ledger position: given ``watch``, a
    ledger that went back in time is quarantined there (LedgerWentBack),
    before any saga runs.
    """
    return {account.user_id: account.balance for account in (await _accounts(clients, service, watch)).accounts}


async def _accounts(clients: ServiceClients, service: str | Iterable[str], watch: LedgerWatch | None) -> AccountList:
    urls = as_urls(service)
    where = ",".join(urls)
    key = service_id(urls)
    mark = None if watch is None else await watch.mark(key)
    try:
        response = await first_reachable(
            urls,
            clients.replicas,
            lambda url: list_accounts.asyncio_detailed(
                client=clients.client_for(url), transaction_id=_correlation_id()
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
    if watch is not None and ledger_id is not None and position is not None:
        await watch.observe(key, ledger_id, position, mark, None)
    return answer


def opened_between(before: Balances, after: Snapshot) -> dict[str, dict[str, int]]:
    """The opening balance of each account in ``after`` that ``before`` lacks, by service: money brought in.

    An account opened after ``after`` was read is left out, as ``after`` does not hold it.
    """
    opened: dict[str, dict[str, int]] = {}
    for key, accounts in after.items():
        new = set(accounts) - set(before.get(key, {}))
        if new:
            opened[key] = {user_id: opening for user_id, opening in after.openings[key].items() if user_id in new}
    return opened


async def snapshot(
    clients: ServiceClients, services: Iterable[str | Iterable[str]], watch: LedgerWatch | None = None
) -> Snapshot:
    """Every service's balances and openings; each service read once, however many times it is listed."""
    by_service: dict[str, tuple[str, ...]] = {}
    for service in services:
        urls = as_urls(service)
        by_service.setdefault(service_id(urls), urls)
    listed = await asyncio.gather(*(_accounts(clients, urls, watch) for urls in by_service.values()))
    read: dict[str, dict[str, int]] = {}
    openings: dict[str, dict[str, int]] = {}
    for key, answer in zip(by_service, listed, strict=True):
        read[key] = {account.user_id: account.balance for account in answer.accounts}
        openings[key] = {account.user_id: account.opening_balance for account in answer.accounts}
    return Snapshot(read, openings)


async def trail(clients: ServiceClients, service: str | Iterable[str], transaction_id: str) -> list[TrailItem]:
    urls = as_urls(service)
    answer = await first_reachable(
        urls,
        clients.replicas,
        lambda url: get_transaction.asyncio(
            transaction_id, client=clients.client_for(url), transaction_id_header=_correlation_id()
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
    clients: ServiceClients, sagas: Sequence[SagaEnd], concurrency: int = 32
) -> dict[tuple[str, str], list[TrailItem]]:
    """The audit trail of every saga on each service it touched, keyed by (service identity, transaction_id)."""
    slots = asyncio.Semaphore(concurrency)
    to_read: dict[tuple[str, str], tuple[str, ...]] = {}
    for saga in sagas:
        for account in (saga.source, saga.target):
            to_read.setdefault((account.service_url, saga.transaction_id), account.urls)

    async def fetch(urls: tuple[str, ...], transaction_id: str) -> list[TrailItem]:
        async with slots:
            return await trail(clients, urls, transaction_id)

    results = await asyncio.gather(*(fetch(urls, key[1]) for key, urls in to_read.items()))
    return dict(zip(to_read, results, strict=True))
