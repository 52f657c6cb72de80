"""The transfer saga, top to bottom.

Debit the source, then credit the target. If the credit is refused, or its
outcome stays unknown, undo in reverse order: fence the credit, then give
the debit back. Every step runs under the transfer's one transaction_id, so
that every retry, duplicate and recovery is idempotent on the services.

The workflow can start from any logged state: run it on a saga restored
from the log and it carries on from there.
"""

from __future__ import annotations

from saga.run import SagaRun
from saga.states import SagaState
from saga.steps import COMPENSATE_CREDIT, COMPENSATE_DEBIT, CREDIT, DEBIT

#: Answers to compensate_credit meaning the credit landed and stays: the
#: money is where the transfer meant it to be.
CREDIT_STANDS = frozenset({"insufficient_funds", "transfer_completed"})


async def transfer(saga: SagaRun) -> SagaState:
    if saga.resumed and saga.state in (SagaState.PENDING, SagaState.DEBITING, SagaState.CREDITING):
        # A log restored from a backup can have forgotten a compensation, and
        # a service replays a reversed debit as applied: ask the services.
        compensated = await saga.compensated_before()
        if compensated is not False:
            because = "a service recorded a compensation the log lacks" if compensated else "cannot read the trails"
            await saga.enter(SagaState.COMPENSATING, fence_credit=True, because=because)
            return await compensate(saga)

    if saga.state in (SagaState.PENDING, SagaState.DEBITING):
        if saga.state is SagaState.PENDING:
            await saga.enter(SagaState.DEBITING)
        debit = await saga.step(DEBIT)
        if debit.refused:
            return await saga.finish(SagaState.FAILED, because=f"debit refused: {debit.code}")
        if not debit.applied:
            # After a crash, a debit that applied may have been followed by a
            # credit the log never heard of: fence it too.
            await saga.enter(
                SagaState.COMPENSATING, fence_credit=saga.credit_may_be_unlogged, because="debit outcome unknown"
            )
            return await compensate(saga)
        await saga.enter(SagaState.CREDITING)

    if saga.state is SagaState.CREDITING:
        credit = await saga.step(CREDIT)
        if credit.applied:
            return await saga.finish(SagaState.COMPLETED)
        # Only a credit whose outcome is unknown may have landed unseen, or
        # may still land: that one must be fenced before the debit is undone.
        await saga.enter(
            SagaState.COMPENSATING,
            fence_credit=not credit.refused,
            because=f"credit refused: {credit.code}" if credit.refused else "credit outcome unknown",
        )

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
    return await saga.finish(SagaState.COMPENSATED)
