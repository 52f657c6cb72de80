"""The transfer saga, top to bottom.

Debit the source, then credit the target. If the credit is refused, or its
outcome stays unknown, undo in reverse order: fence the credit, then give
the debit back. Every step runs under the transfer's one transaction_id, so
that every retry, duplicate and recovery is idempotent on the services.

After the saga's deadline no debit or credit goes out any more (saga/run.py
checks it before each request); compensations always do.

The workflow can start from any logged state: run it on a saga restored
from the log and it carries on from there.
"""

from __future__ import annotations

from typing import Final

from saga.run import SagaRun, StepResult
from saga.states import SagaState
from saga.steps import COMPENSATE_CREDIT, COMPENSATE_DEBIT, CREDIT, DEBIT

#: Answers to compensate_credit meaning the credit landed and stays: the
#: money is where the transfer meant it to be.
CREDIT_STANDS = frozenset({"insufficient_funds", "transfer_completed"})

#: Why a saga ended FAILED or COMPENSATED, beside the services' refusal codes.
DEADLINE_EXCEEDED: Final = "deadline_exceeded"
OUTCOME_UNKNOWN: Final = "outcome_unknown"


async def transfer(saga: SagaRun) -> SagaState:
    if saga.resumed and saga.state in (SagaState.PENDING, SagaState.DEBITING, SagaState.CREDITING):
        # A log restored from a backup can have forgotten a compensation, and
        # a service replays a reversed debit as applied: ask the services.
        compensated = await saga.compensated_before()
        if compensated is not False:
            because = "a service recorded a compensation the log lacks" if compensated else "cannot read the trails"
            await saga.enter(SagaState.COMPENSATING, fence_credit=True, because=because, code=OUTCOME_UNKNOWN)
            return await compensate(saga)

    if saga.state in (SagaState.PENDING, SagaState.DEBITING):
        if saga.state is SagaState.PENDING:
            await saga.enter(SagaState.DEBITING)
        debit = await saga.step(DEBIT)
        if debit.refused:
            return await saga.finish(SagaState.FAILED, because=f"debit refused: {debit.code}", code=debit.refusal_code)
        if debit.never_sent:
            # Nothing went out, unless a run that a log restored from a backup
            # forgot did send it: the services know, and that one is undone.
            if await saga.nothing_on_record():
                because = "the deadline passed before the debit was sent"
                return await saga.finish(SagaState.FAILED, because=because, code=DEADLINE_EXCEEDED)
            because = "the deadline passed; a run the log lacks may have sent the debit"
            await saga.enter(SagaState.COMPENSATING, fence_credit=True, because=because, code=DEADLINE_EXCEEDED)
            return await compensate(saga)
        if not debit.applied:
            # After a crash, a debit that applied may have been followed by a
            # credit the log never heard of: fence it too.
            because, code = why_compensate(DEBIT, debit)
            fence_credit = saga.credit_may_be_unlogged or debit.expired
            await saga.enter(SagaState.COMPENSATING, fence_credit=fence_credit, because=because, code=code)
            return await compensate(saga)
        await saga.enter(SagaState.CREDITING)

    if saga.state is SagaState.CREDITING:
        credit = await saga.step(CREDIT)
        if credit.applied:
            return await saga.finish(SagaState.COMPLETED)
        # A credit that may have gone out without a final answer may have landed
        # unseen, or may still land: it is fenced before the debit is undone. So
        # is one the deadline kept from going out here, since a run that a log
        # restored from a backup forgot may have sent it; only a refusal is sure.
        because, code = why_compensate(CREDIT, credit)
        fence_credit = not credit.refused
        await saga.enter(SagaState.COMPENSATING, fence_credit=fence_credit, because=because, code=code)

    return await compensate(saga)


async def compensate(saga: SagaRun) -> SagaState:
    """Undo in reverse order. Each compensation retries until the service answers it."""
    if saga.fence_credit:
        # Void the credit, or reverse it if it landed. Giving the debit back
        # while the credit might still land would create money.
        fence = await saga.compensate(COMPENSATE_CREDIT)
        if fence.code in CREDIT_STANDS:
            return await saga.finish(SagaState.COMPLETED, because="the credit landed and stands")
    undo = await saga.compensate(COMPENSATE_DEBIT)
    if undo.code == "transfer_completed":
        return await saga.finish(SagaState.COMPLETED, because="the credit landed and stands")
    # Why it compensated, as logged with COMPENSATING (by this run or an earlier one).
    return await saga.finish(SagaState.COMPENSATED, code=saga.code or OUTCOME_UNKNOWN)


def why_compensate(step: str, result: StepResult) -> tuple[str, str]:
    """Why a debit or credit that did not apply is undone: a line for the log, and its stable code."""
    if result.refused:
        return f"{step} refused: {result.code}", result.refusal_code
    if result.expired:
        return f"the deadline passed before the {step} settled", DEADLINE_EXCEEDED
    return f"{step} outcome unknown", OUTCOME_UNKNOWN
