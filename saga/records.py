"""What the saga log holds: one row per saga, and its history of events."""

from __future__ import annotations

from dataclasses import dataclass, field

from saga.states import SagaState


@dataclass(frozen=True, slots=True)
class AccountRef:
    """An account on one accounts service."""

    service_url: str
    user_id: str

    def __str__(self) -> str:
        return f"{self.user_id}@{self.service_url}"


@dataclass(slots=True)
class SagaRecord:
    transaction_id: str
    source: AccountRef
    target: AccountRef
    amount: int
    state: SagaState = SagaState.PENDING
    #: True once a credit may have landed unseen: compensation must then void
    #: or reverse the credit before it gives the debit back.
    fence_credit: bool = False
    created_at_ms: int = 0
    updated_at_ms: int = 0
    attempts: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request of one step, as it came back."""

    step: str
    number: int
    status: int | None
    code: str | None
    latency_us: int
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == 200


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a saga's history: a state change or an attempt."""

    transaction_id: str
    at_ms: int
    kind: str
    state: SagaState | None = None
    attempt: Attempt | None = None
    detail: str | None = None


@dataclass(slots=True)
class Change:
    """Everything one commit writes about one saga."""

    transaction_id: str
    at_ms: int
    state: SagaState | None = None
    fence_credit: bool | None = None
    attempts: list[Attempt] = field(default_factory=list)
    error: str | None = None
