"""The invariants a batch of transfers must leave true, checked against the services themselves.

Pure functions over snapshots: balances before and after, each saga's end
state, and each service's audit trail of each saga. The batch command, the
tests, the scenarios and the simulator all judge a run with these.

Two ends are an operator's (saga/operator.py). A CANCELLED saga never sent
anything, so any entry a service holds under its id is a violation: a
cancelled transfer moved money. A RESOLVED saga was settled by hand: its
trail is not judged against its end (a service forgot it), its balances are
predicted from its trail when there is one, and money moved by hand outside
it (resolution ``moved_by_hand``) is named beside any difference it may
explain, which is still reported: the batch cannot vouch for hand moves.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from saga.records import AccountRef, Resolution, SagaRecord
from saga.states import SagaState

Balances = Mapping[str, Mapping[str, int]]
"""service identity (its URL, or its URLs as :func:`saga.records.service_id` joins them) -> user_id -> balance"""

Openings = Mapping[str, Mapping[str, int]]
"""service identity -> user_id -> opening balance, of the accounts an operator opened between two readings.

Their money was brought into the ledgers, not moved by a transfer: a check
of conservation counts it as brought in, and predicts each such account from
its opening balance.
"""


def brought_in(opened: Openings | None) -> int:
    return 0 if opened is None else sum(sum(accounts.values()) for accounts in opened.values())


@dataclass(frozen=True, slots=True)
class TrailItem:
    """One operation a service recorded under a transaction id."""

    operation: str
    user_id: str
    amount: int
    outcome: str | None  # applied, reversed, voided; None for a recorded rejection


@dataclass(frozen=True, slots=True)
class SagaEnd:
    transaction_id: str
    state: SagaState
    source: AccountRef
    target: AccountRef
    amount: int
    #: How it ended, as a stable code (SagaRecord.code): for RESOLVED, the resolution. None where unknown.
    code: str | None = None

    @classmethod
    def of(cls, record: SagaRecord) -> SagaEnd:
        return cls(record.transaction_id, record.state, record.source, record.target, record.amount, record.code)

    @property
    def moved_by_hand(self) -> bool:
        """Whether an operator settled it by moving money by hand, outside the saga and its trail."""
        return self.state is SagaState.RESOLVED and self.code == Resolution.MOVED_BY_HAND.value


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: str
    detail: str
    transaction_ids: tuple[str, ...] = ()
    #: ``user@service`` when the violation is about one account's balance.
    account: str | None = None

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail}"


_SIGN = {"debit": -1, "credit": 1, "compensate_debit": 1, "compensate_credit": -1}


def net_effect(trail: Iterable[TrailItem]) -> dict[str, int]:
    """user_id -> the net change a trail made to balances."""
    effect: dict[str, int] = defaultdict(int)
    for item in trail:
        if item.outcome in ("applied", "reversed"):
            effect[item.user_id] += _SIGN[item.operation] * item.amount
    return {user: change for user, change in effect.items() if change}


def total(balances: Balances) -> int:
    return sum(sum(accounts.values()) for accounts in balances.values())


def check(
    before: Balances,
    after: Balances,
    sagas: Sequence[SagaEnd],
    trails: Mapping[tuple[str, str], Sequence[TrailItem]] | None = None,
    *,
    sole_traffic: bool = True,
    opened: Openings | None = None,
) -> list[Violation]:
    """Every violated invariant; an empty list means the money is exactly where it should be.

    ``trails`` maps (service identity, transaction_id) to that service's audit
    trail. ``sole_traffic`` says these sagas were the only traffic, so each
    balance can be predicted exactly from the sagas' end states. ``opened``
    names the accounts opened after ``before`` was read: their opening
    balances are money brought in, so the total may grow by exactly that.
    """
    violations: list[Violation] = []
    if total(after) != total(before) + brought_in(opened):
        by_hand = [saga.transaction_id for saga in sagas if saga.moved_by_hand]
        detail = f"total was {total(before)}, is {total(after)} ({total(after) - total(before):+d})"
        if opened:
            detail += f"; {brought_in(opened)} was brought in by accounts opened since"
        if by_hand:
            detail += (
                f"; {len(by_hand)} sagas were settled with money moved by hand outside them (moved_by_hand): "
                "compare the difference with what the operators moved"
            )
        violations.append(Violation("money conserved", detail, tuple(by_hand[:10])))
    for url, accounts in after.items():
        for user, balance in accounts.items():
            if balance < 0:
                violations.append(Violation("no negative balance", f"{user}@{url} is {balance}"))
    unfinished = [saga.transaction_id for saga in sagas if not saga.state.is_terminal]
    if unfinished:
        violations.append(
            Violation("every saga terminal", f"{len(unfinished)} sagas unfinished", tuple(unfinished[:10]))
        )
    forgotten = [saga for saga in sagas if saga.state is SagaState.NEEDS_ATTENTION]
    if forgotten:
        services = sorted(
            {saga.source.service_url for saga in forgotten} | {saga.target.service_url for saga in forgotten}
        )
        violations.append(
            Violation(
                "no service forgot a saga",
                f"{len(forgotten)} sagas need attention: a service they touched answered from a new ledger "
                f"({', '.join(services)})",
                tuple(saga.transaction_id for saga in forgotten[:10]),
            )
        )
    if sole_traffic:
        violations += _check_exact_balances(before, after, sagas, trails, opened)
    if trails is not None:
        violations += check_trails(sagas, trails)
    return violations


@dataclass(frozen=True, slots=True)
class Judgement:
    violations: list[Violation]
    #: ``user@service`` of each account whose balance other traffic moved; their balances were not compared.
    other_traffic: tuple[str, ...] = ()


OTHER_TRAFFIC = "other traffic moved money on these accounts; balances not compared"


def judge_shared(
    before: Balances,
    after: Balances,
    sagas: Sequence[SagaEnd],
    trails: Mapping[tuple[str, str], Sequence[TrailItem]] | None,
    opened: Openings | None = None,
) -> Judgement:
    """:func:`check` for sagas that may share their accounts with traffic of others (a live service).

    Every saga is judged by its own audit trail, as always. Its balances are
    predicted from the sagas alone only if no one else moved money, so a
    difference is put down to other traffic only where nothing else can
    explain it: the total over all services is unchanged, no balance is
    negative, every saga ended, and every saga's trail agrees with its end
    state. Without trails (no audit) nothing vouches for the sagas, and the
    balances are compared as for :func:`check`.
    """
    violations = check(before, after, sagas, trails, sole_traffic=False, opened=opened)
    mismatches = _check_exact_balances(before, after, sagas, trails, opened)
    if not mismatches:
        return Judgement(violations)
    if trails is None or violations:
        return Judgement(violations + mismatches)
    return Judgement(violations, tuple(sorted({m.account for m in mismatches if m.account is not None})))


def _check_exact_balances(
    before: Balances,
    after: Balances,
    sagas: Sequence[SagaEnd],
    trails: Mapping[tuple[str, str], Sequence[TrailItem]] | None = None,
    opened: Openings | None = None,
) -> list[Violation]:
    expected = {url: dict(accounts) for url, accounts in before.items()}
    for url, accounts in (opened or {}).items():
        for user, opening_balance in accounts.items():
            expected.setdefault(url, {})[user] = opening_balance
    for saga in sagas:
        if saga.state is SagaState.COMPLETED:
            expected[saga.source.service_url][saga.source.user_id] -= saga.amount
            expected[saga.target.service_url][saga.target.user_id] += saga.amount
        elif saga.state is SagaState.RESOLVED and trails is not None:
            # Settled by hand: what its trail moved is what it left in the balances (hand moves aside).
            for url in {saga.source.service_url, saga.target.service_url}:
                for user, change in net_effect(trails.get((url, saga.transaction_id), ())).items():
                    if user in expected.get(url, {}):
                        expected[url][user] += change
    violations = []
    for url, accounts in after.items():
        for user, balance in accounts.items():
            want = expected.get(url, {}).get(user)
            if balance != want:
                involved = [saga for saga in sagas if (url, user) in _keys(saga.source, saga.target)]
                violations.append(
                    Violation(
                        "balances match the sagas",
                        f"{user}@{url} is {balance}, the sagas say {want}" + _by_hand_note(involved, trails),
                        tuple(saga.transaction_id for saga in involved[:10]),
                        account=f"{user}@{url}",
                    )
                )
    return violations


def _by_hand_note(involved: Sequence[SagaEnd], trails: Mapping[tuple[str, str], Sequence[TrailItem]] | None) -> str:
    """What the sagas settled by hand among ``involved`` leave unknown of an account's balance, if anything."""
    moved = [saga.transaction_id for saga in involved if saga.moved_by_hand]
    unknown = [
        saga.transaction_id
        for saga in involved
        if saga.state is SagaState.RESOLVED and not saga.moved_by_hand and trails is None
    ]
    note = ""
    if moved:
        note += f"; money was moved by hand outside {', '.join(moved[:10])} (moved_by_hand): compare with that"
    if unknown:
        note += f"; {', '.join(unknown[:10])} settled by hand: without an audit, what its trail moved is unknown"
    return note


def _entry_text(service: str, item: TrailItem) -> str:
    return f"{item.operation} {item.amount} of {item.user_id}@{service} ({item.outcome or 'rejected'})"


def _keys(*accounts: AccountRef) -> list[tuple[str, str]]:
    return [(account.service_url, account.user_id) for account in accounts]


def check_trails(sagas: Sequence[SagaEnd], trails: Mapping[tuple[str, str], Sequence[TrailItem]]) -> list[Violation]:
    """Each saga whose services' trails moved other amounts than its end state says.

    NEEDS_ATTENTION and RESOLVED are not judged: a forgetful service's trail
    says nothing of what it did before, and an operator settled the latter by
    hand. A CANCELLED saga never sent anything: any entry under its id is a
    violation, a rejection or a net-zero pair included.
    """
    violations = []
    for saga in sagas:
        if not saga.state.is_terminal or saga.state in (SagaState.NEEDS_ATTENTION, SagaState.RESOLVED):
            continue
        urls = {saga.source.service_url, saga.target.service_url}
        if saga.state is SagaState.CANCELLED:
            tid = saga.transaction_id
            held = [_entry_text(url, item) for url in sorted(urls) for item in trails.get((url, tid), ())]
            if held:
                violations.append(
                    Violation(
                        "no cancelled transfer moved money",
                        f"{tid}: the services hold {'; '.join(held)} under its id; a cancelled transfer sent nothing",
                        (tid,),
                    )
                )
            continue
        effect: dict[tuple[str, str], int] = defaultdict(int)
        for url in urls:
            for user, change in net_effect(trails.get((url, saga.transaction_id), ())).items():
                effect[(url, user)] += change
        effect = {key: change for key, change in effect.items() if change}
        if saga.state is SagaState.COMPLETED:
            wanted = {
                (saga.source.service_url, saga.source.user_id): -saga.amount,
                (saga.target.service_url, saga.target.user_id): saga.amount,
            }
            if effect != wanted:
                violations.append(
                    Violation(
                        "audit agrees with COMPLETED",
                        f"{saga.transaction_id}: the services moved {dict(effect)}, expected {wanted}",
                        (saga.transaction_id,),
                    )
                )
        elif effect:
            violations.append(
                Violation(
                    f"audit agrees with {saga.state}",
                    f"{saga.transaction_id}: the services moved {dict(effect)}, expected no net effect",
                    (saga.transaction_id,),
                )
            )
    return violations
