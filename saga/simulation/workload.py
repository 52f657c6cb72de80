"""What a run asks of the saga: the services, their accounts, and the transfers, all drawn from the seed."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from saga.records import AccountRef
from saga.simulation.faults import MillisecondRange


@dataclass(frozen=True)
class WorkloadShape:
    """The kind of traffic a run generates.

    Few accounts with small balances against amounts of the same size keep
    sagas contending for the same money, so that insufficient funds are a
    common answer and concurrent debits of one account meet often.

    A share of the transfers has a deadline: so many milliseconds after it is
    handed over, on the virtual clock, which each orchestrator reads on its
    own drifting clock. Enough for a saga without faults (one with a
    deadline never expires in a run without faults), too little for one
    that meets a hanging answer, a crash or a pause, so that a good number
    expire mid-saga. A share is submitted to the log as PENDING, as the
    transfers service does, for the orchestrators to claim; until one does,
    an operator may cancel it.
    """

    accounts_per_service: int = 3
    min_balance: int = 1_000
    max_balance: int = 5_000
    min_amount: int = 1
    max_amount: int = 2_000
    deadline_share: float = 0.5
    deadline_ms: MillisecondRange = field(default_factory=lambda: MillisecondRange(2_500, 8_000))
    submitted_share: float = 0.25

    def __post_init__(self) -> None:
        if self.accounts_per_service < 1:
            raise ValueError("every service needs at least one account")
        if not 0 <= self.min_balance <= self.max_balance:
            raise ValueError("balances must satisfy 0 <= min_balance <= max_balance")
        if not 1 <= self.min_amount <= self.max_amount:
            raise ValueError("amounts must satisfy 1 <= min_amount <= max_amount")
        if not (0 <= self.deadline_share <= 1 and 0 <= self.submitted_share <= 1):
            raise ValueError("deadline_share and submitted_share are shares from 0 to 1")


@dataclass(frozen=True)
class PlannedTransfer:
    source: AccountRef
    target: AccountRef
    amount: int
    #: Its deadline, in ms after it is handed over (on the virtual clock); None for none.
    deadline_after_ms: int | None = None
    #: Submitted to the log as PENDING for the orchestrators to claim, rather than driven at once by one.
    submitted: bool = False


@dataclass(frozen=True)
class Workload:
    #: service host -> user_id -> opening balance
    balances: dict[str, dict[str, int]]
    transfers: list[PlannedTransfer]


def service_host(index: int) -> str:
    return f"bank-{index}.sim"


def service_url(host: str) -> str:
    return f"http://{host}"


def draw_workload(
    rng: random.Random,
    services: int,
    transfers: int,
    shape: WorkloadShape,
    *,
    handling: random.Random | None = None,
) -> Workload:
    """Open the accounts and draw every transfer, same-service and cross-service alike.

    ``handling`` draws each transfer's deadline and whether it is submitted;
    without it none has a deadline and all are driven at once. It is a
    stream of its own, so that the transfers themselves stay those of the seed.
    """
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
        amount = rng.randint(shape.min_amount, shape.max_amount)
        deadline_after_ms, submitted = None, False
        if handling is not None:
            if handling.random() < shape.deadline_share:
                deadline_after_ms = handling.randint(shape.deadline_ms.low, shape.deadline_ms.high)
            submitted = handling.random() < shape.submitted_share
        planned.append(PlannedTransfer(source, target, amount, deadline_after_ms, submitted))
    return Workload(balances, planned)


def seeded_ids(rng: random.Random) -> Callable[[], str]:
    """Transaction ids shaped like uuid4s, drawn from ``rng`` so that a seed names the same sagas every time."""

    def new_id() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    return new_id
