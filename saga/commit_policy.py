"""Which of a saga run's changes are committed before its next request, and which ride with a later commit.

A request goes out only once the log holds what a recovery needs should the
run die with that request in flight. Whatever else the run learned (a state,
an attempt) may wait and ride with the next commit: several changes in one
commit saves a commit per step. What may wait depends on whether another
process can take the saga over while the run lives, so the policy is chosen
once from the log (:func:`commit_policy_for`) and :class:`saga.run.SagaRun`
consults it before each state change and each request.

On every log, whatever its policy:

- the saga's creation is committed before its first request (the
  orchestrator creates it before the first debit);
- the first answer from each service's ledger is durable before the next
  request: a recovery compares every later answer with it, to notice a
  service that forgot the saga (LedgerChanged);
- a state entered with a reason or a ``fence_credit``, ``COMPENSATING`` and
  every terminal state are committed at once, a terminal state before the
  saga's result is returned;
- changes that waited are committed in order with the next commit, and kept
  for the one after if that commit fails.
"""

from __future__ import annotations

from dataclasses import dataclass

from saga.logs import SagaLog
from saga.states import SagaState
from saga.steps import CREDIT, DEBIT


@dataclass(frozen=True, slots=True)
class CommitPolicy:
    """What a run on one kind of log may leave uncommitted; everything else is committed before the next request."""

    #: States whose entry commits nothing by itself: the change, and the
    #: attempts before it, ride with the next commit. Only when entered with
    #: no reason and no ``fence_credit``.
    states_that_ride: frozenset[SagaState]
    #: Steps whose requests go out while attempts and states that rode are
    #: still uncommitted, unless one of those attempts holds the first answer
    #: from a service's ledger. Before any other request everything is committed.
    steps_sent_uncommitted: frozenset[str]


#: A log that several processes share under leases (PostgreSQL, the
#: simulator's log of several orchestrators): everything learned so far is
#: committed before any request goes out. Each commit is checked against the
#: epoch the run claimed, and that check is what stops a run that lost its
#: lease from sending anything more.
SHARED_LOG = CommitPolicy(states_that_ride=frozenset(), steps_sent_uncommitted=frozenset())

#: A log one process holds (SQLite's file lock), so no takeover can happen
#: while the run lives: forward state changes (PENDING to DEBITING to
#: CREDITING) and attempts ride with the next commit. A crash before they are
#: durable leaves the saga logged in PENDING or DEBITING, and recovery runs the
#: forward path again under the same transaction_id: each service replays what
#: it recorded for the debit and the credit (applied or refused, the same answer
#: as before) or applies it for the first time, so the run ends exactly where
#: the lost one was going.
#:
#: This holds only as long as nothing has been compensated: a service replays
#: an applied debit or credit as applied even after its compensation reversed
#: it, so a recovery from DEBITING after a compensation would complete a
#: transfer whose debit had been given back, or whose credit had been reversed.
#: Hence no compensation request goes out uncommitted: COMPENSATING and its
#: fence_credit are durable before it, and from COMPENSATING on recovery
#: resumes the compensations, which the services replay. A recovery that
#: cannot learn the debit's outcome fences the credit before giving the debit
#: back, since the lost run may have sent it
#: (:attr:`saga.run.SagaRun.credit_may_be_unlogged`).
EXCLUSIVE_LOG = CommitPolicy(
    states_that_ride=frozenset({SagaState.DEBITING, SagaState.CREDITING}),
    steps_sent_uncommitted=frozenset({DEBIT, CREDIT}),
)


def commit_policy_for(log: SagaLog) -> CommitPolicy:
    return EXCLUSIVE_LOG if log.exclusive else SHARED_LOG
