"""Reads from the accounts services, through the generated client: balances and audit trails."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence

from generated_client.api.accounts import get_transaction, list_accounts
from generated_client.models import AccountList, TransactionTrail
from saga.orchestrator import Orchestrator
from saga.verify import SagaEnd, TrailItem


class ServiceUnavailable(Exception):
    """An accounts service could not be read."""


def _correlation_id() -> str:
    return f"read-{uuid.uuid4()}"


async def balances(orchestrator: Orchestrator, service_url: str) -> dict[str, int]:
    """user_id -> balance, for every account on one service."""
    try:
        answer = await list_accounts.asyncio(
            client=orchestrator.client_for(service_url), transaction_id=_correlation_id()
        )
    except Exception as error:
        raise ServiceUnavailable(
            f"cannot reach the accounts service at {service_url}: {error or type(error).__name__}"
        ) from error
    if not isinstance(answer, AccountList):
        detail = getattr(answer, "detail", "no readable answer")
        raise ServiceUnavailable(f"the accounts service at {service_url} refused to list accounts: {detail}")
    return {account.user_id: account.balance for account in answer.accounts}


async def snapshot(orchestrator: Orchestrator, service_urls: Iterable[str]) -> dict[str, dict[str, int]]:
    urls = list(dict.fromkeys(service_urls))
    results = await asyncio.gather(*(balances(orchestrator, url) for url in urls))
    return dict(zip(urls, results, strict=True))


async def trail(orchestrator: Orchestrator, service_url: str, transaction_id: str) -> list[TrailItem]:
    answer = await get_transaction.asyncio(
        transaction_id,
        client=orchestrator.client_for(service_url),
        transaction_id_header=_correlation_id(),
    )
    if not isinstance(answer, TransactionTrail):
        raise ServiceUnavailable(f"cannot read the trail of {transaction_id} at {service_url}")
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
    """The audit trail of every saga on each service it touched."""
    slots = asyncio.Semaphore(concurrency)
    keys = list(
        dict.fromkeys(
            (url, saga.transaction_id) for saga in sagas for url in (saga.source.service_url, saga.target.service_url)
        )
    )

    async def fetch(url: str, transaction_id: str) -> list[TrailItem]:
        async with slots:
            return await trail(orchestrator, url, transaction_id)

    results = await asyncio.gather(*(fetch(url, transaction_id) for url, transaction_id in keys))
    return dict(zip(keys, results, strict=True))
