"""What a saga run waits on, told as it happens: a request out, or the backoff before the next one.

The run tells a :class:`WaitObserver`; it never prints. A command that drives
sagas in front of a person (``transfer``, ``recover``) shows these on stderr
(saga/cli/terminal.py), so that a service that stops answering is never silence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from saga.records import Attempt


@dataclass(frozen=True, slots=True)
class RequestOut:
    """One request of a step, sent and not yet answered."""

    transaction_id: str
    step: str
    #: The attempt's number within its step (1-based).
    attempt: int
    #: How many attempts the step's policy allows in this run; None when it allows any number.
    attempts: int | None
    url: str
    #: Seconds after which the request counts as lost (the policy's request timeout).
    timeout: float


@dataclass(frozen=True, slots=True)
class Backoff:
    """An attempt that got no final answer, and the wait before the next one."""

    transaction_id: str
    #: The attempt that failed: its step, number and what came back.
    failed: Attempt
    attempts: int | None
    #: Seconds until the next attempt goes out, unless an operator's retry cuts it short.
    delay: float


class WaitObserver(Protocol):
    def sending(self, request: RequestOut) -> None:
        """``request`` goes out now."""

    def answered(self, request: RequestOut) -> None:
        """``request`` came back: with an answer, an error, or its timeout."""

    def backing_off(self, backoff: Backoff) -> None:
        """The run waits ``backoff.delay`` seconds before the next attempt of the step."""


class NoWaits:
    """Tells no one: the observer of a run that nobody watches."""

    def sending(self, request: RequestOut) -> None:
        pass

    def answered(self, request: RequestOut) -> None:
        pass

    def backing_off(self, backoff: Backoff) -> None:
        pass
