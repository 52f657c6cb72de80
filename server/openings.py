"""Opening an account on a running ledger: money brought in, by an operator, once per transaction id.

An opening is not a transfer. Its balance comes from outside every ledger
(a deposit, a migration from another system), so it is recorded apart from
the ledger's entries: as the account's opening balance, which every
conservation check counts as money brought in, and as an audit record that
names the operator and the reason. Like every state change it is keyed by
its transaction id: a repeat replays the first answer, a refusal included.

The rule is one pure function, :func:`decide_opening`; every store calls it
inside its own unit of work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

OpeningRejection = Literal["account_exists", "balance_limit_exceeded"]

#: The longest reason an operator may give; one line of an audit record.
MAX_REASON_LENGTH: Final = 500
#: One line with something in it: no control characters but the tab.
REASON_PATTERN: Final = r"^[^\x00-\x08\x0a-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x08\x0a-\x1f\x7f]*$"


@dataclass(frozen=True, slots=True)
class OpeningRequest:
    transaction_id: str
    user_id: str
    opening_balance: int
    #: The operator's name, from the credential that asked.
    operator: str
    reason: str


@dataclass(frozen=True, slots=True)
class Opening:
    """What the ledger did with one opening request, once and for all."""

    transaction_id: str
    user_id: str
    opening_balance: int
    operator: str
    reason: str
    #: ISO 8601 UTC, when the decision was recorded.
    recorded_at: str
    rejection: OpeningRejection | None = None

    @property
    def status(self) -> int:
        return 201 if self.rejection is None else 409

    @property
    def opened(self) -> bool:
        return self.rejection is None

    def matches(self, request: OpeningRequest) -> bool:
        """Whether ``request`` asks for the same opening; who asked and why may differ on a retry."""
        return self.user_id == request.user_id and self.opening_balance == request.opening_balance


class OpeningKeyReused(Exception):
    """The transaction id opened an account before, with another user or balance."""

    def __init__(self, request: OpeningRequest, recorded: Opening) -> None:
        super().__init__(
            f"transaction_id {request.transaction_id!r} already opened {recorded.user_id!r} with "
            f"{recorded.opening_balance}; it cannot open {request.user_id!r} with {request.opening_balance}"
        )
        self.recorded = recorded


def decide_opening(
    request: OpeningRequest, *, account_exists: bool, recorded: Opening | None, max_balance: int, now: str
) -> tuple[Opening, bool]:
    """The opening to answer with, and whether it is a replay of the one ``recorded``.

    Raises OpeningKeyReused when the id was used for another opening. A new
    opening of an account that exists is refused, and the refusal recorded:
    an opening never adds money to an account that already holds some.
    """
    if recorded is not None:
        if not recorded.matches(request):
            raise OpeningKeyReused(request, recorded)
        return recorded, True
    rejection: OpeningRejection | None = None
    if account_exists:
        rejection = "account_exists"
    elif request.opening_balance > max_balance:
        rejection = "balance_limit_exceeded"
    opening = Opening(
        request.transaction_id,
        request.user_id,
        request.opening_balance,
        request.operator,
        request.reason,
        now,
        rejection,
    )
    return opening, False
