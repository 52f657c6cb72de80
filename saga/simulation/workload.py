"""What a run asks of the saga: the services, their accounts, and the transfers, all drawn from the seed."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from saga.batch import PlannedTransfer
from saga.records import AccountRef


@dataclass(frozen=True)
class WorkloadShape:
    """The kind of traffic a run generates.

    Few accounts with small balances against amounts of the same size keep
    sagas contending for the same money, so that insufficient funds are a
    common answer and concurrent debits of one account meet often.
    """

    accounts_per_service: int = 3
    min_balance: int = 1_000
    max_balance: int = 5_000
    min_amount: int = 1
    max_amount: int = 2_000

    def __post_init__(self) -> None:
        if self.accounts_per_service < 1:
            raise ValueError("every service needs at least one account")
        if not 0 <= self.min_balance <= self.max_balance:
            raise ValueError("balances must satisfy 0 <= min_balance <= max_balance")
        if not 1 <= self.min_amount <= self.max_amount:
            raise ValueError("amounts must satisfy 1 <= min_amount <= max_amount")


@dataclass(frozen=True)
class Workload:
    #: service host -> user_id -> opening balance
    balances: dict[str, dict[str, int]]
    transfers: list[PlannedTransfer]


def service_host(index: int) -> str:
    return f"bank-{index}.sim"


def service_url(host: str) -> str:
    return f"http://{host}"


def draw_workload(rng: random.Random, services: int, transfers: int, shape: WorkloadShape) -> Workload:
    """Open the accounts and draw every transfer, same-service and cross-service alike."""
    if services < 1:
        raise ValueError("a simulation needs at least one service")
    if services * shape.accounts_per_service < 2:
        raise ValueError("a transfer needs two distinct accounts")
    balances = {
        service_host(index): {
            f"user-{number}": rng.randint(shape.min_balance, shape.max_balance)
            for number in range(shape.accounts_per_service)
        }
        for index in range(services)
    }
    accounts = [AccountRef(service_url(host), user) for host, users in balances.items() for user in users]
    planned = []
    for _ in range(transfers):
        source, target = rng.sample(accounts, 2)
        planned.append(PlannedTransfer(source, target, rng.randint(shape.min_amount, shape.max_amount)))
    return Workload(balances, planned)


def seeded_ids(rng: random.Random) -> Callable[[], str]:
    """Transaction ids shaped like uuid4s, drawn from ``rng`` so that a seed names the same sagas every time."""

    def new_id() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    return new_id
