"""Ledgers that went back in time: the rule, and the watch that applies it for one orchestrator process."""

from __future__ import annotations

import asyncio

import pytest

from saga import MemorySagaLog
from saga.ledger_watch import REFRESH_SECONDS, LedgerWatch
from saga.ledgers import LedgerMark, LedgerWentBack, Quarantine, ServiceQuarantined, went_back


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def watch_over(log: MemorySagaLog, clock: Clock) -> LedgerWatch:
    return LedgerWatch(log, lambda: 1_700_000_000_000, clock)


def test_went_back_says_why_only_for_a_lower_position_or_another_ledger() -> None:
    mark = LedgerMark("bank-a", "L1", 100)
    assert went_back(None, "L1", 0) is None
    assert went_back(LedgerMark("bank-a", None, 0, 1), "L2", 0) is None, "a new generation names the ledger anew"
    assert went_back(mark, "L1", 100) is None
    assert went_back(mark, "L1", 101) is None
    lower = went_back(mark, "L1", 99)
    assert lower is not None
    assert "from position 100 to 99" in lower
    assert "1 entries forgotten" in lower
    replaced = went_back(mark, "L2", 500)
    assert replaced is not None
    assert "replaced" in replaced
    assert "L2" in replaced


def test_a_position_below_the_mark_quarantines_the_service_and_stops_the_saga() -> None:
    async def scenario() -> None:
        log, clock = MemorySagaLog(), Clock()
        watch = watch_over(log, clock)
        await watch.observe("bank-a", "L1", 50, await watch.mark("bank-a"), "t-1")
        assert await log.ledger_marks() == {"bank-a": LedgerMark("bank-a", "L1", 50)}, "a first mark is saved at once"
        mark = await watch.mark("bank-a")
        with pytest.raises(LedgerWentBack, match="bank-a has forgotten what it did"):
            await watch.observe("bank-a", "L1", 12, mark, "t-2")
        (quarantine,) = await log.quarantines()
        assert (quarantine.service, quarantine.transaction_id) == ("bank-a", "t-2")
        assert "from position 50 to 12" in quarantine.reason
        with pytest.raises(ServiceQuarantined, match="reconcile --accept"):
            await watch.refuse_quarantined("bank-b", "bank-a")
        await watch.refuse_quarantined("bank-b")

    asyncio.run(scenario())


def test_an_answer_is_judged_by_the_mark_taken_before_its_request_so_racing_sagas_never_trip_it() -> None:
    async def scenario() -> None:
        log, clock = MemorySagaLog(), Clock()
        watch = watch_over(log, clock)
        await watch.observe("bank-a", "L1", 10, None, "t-0")
        before_slow, before_fast = await watch.mark("bank-a"), await watch.mark("bank-a")
        # The later request's answer (position 30) arrives first; the earlier one's (20) after it.
        await watch.observe("bank-a", "L1", 30, before_fast, "t-fast")
        await watch.observe("bank-a", "L1", 20, before_slow, "t-slow")
        assert await log.quarantines() == []
        assert await watch.mark("bank-a") == LedgerMark("bank-a", "L1", 30)

    asyncio.run(scenario())


def test_marks_are_saved_at_most_once_a_second_and_on_flush() -> None:
    async def scenario() -> None:
        log, clock = MemorySagaLog(), Clock()
        watch = watch_over(log, clock)
        await watch.observe("bank-a", "L1", 1, None, "t-1")
        for position in range(2, 6):
            await watch.observe("bank-a", "L1", position, await watch.mark("bank-a"), "t")
        assert (await log.ledger_marks())["bank-a"].position == 1
        clock.now += REFRESH_SECONDS
        await watch.observe("bank-a", "L1", 6, await watch.mark("bank-a"), "t")
        assert (await log.ledger_marks())["bank-a"].position == 6
        await watch.observe("bank-a", "L1", 7, await watch.mark("bank-a"), "t")
        await watch.flush()
        assert (await log.ledger_marks())["bank-a"].position == 7

    asyncio.run(scenario())


def test_another_process_quarantine_reaches_this_one_within_a_second() -> None:
    async def scenario() -> None:
        log, clock = MemorySagaLog(), Clock()
        watch = watch_over(log, clock)
        await watch.refuse_quarantined("bank-a")
        await log.quarantine(Quarantine("bank-a", "went back", 1))
        await watch.refuse_quarantined("bank-a")
        clock.now += REFRESH_SECONDS
        with pytest.raises(ServiceQuarantined):
            await watch.refuse_quarantined("bank-a")

    asyncio.run(scenario())


def test_after_an_accepted_decision_the_lower_position_is_the_new_mark() -> None:
    async def scenario() -> None:
        log, clock = MemorySagaLog(), Clock()
        watch = watch_over(log, clock)
        await watch.observe("bank-a", "L1", 900, None, "t-1")
        stale = await watch.mark("bank-a")
        # Another process saw the restore, and an operator accepted the ledger as it is.
        await log.quarantine(Quarantine("bank-a", "went back from 900 to 300", 1))
        await log.accept("bank-a", "reconciled", 2)
        # This process still holds the old mark, but the log has the last word.
        await watch.observe("bank-a", "L1", 310, stale, "t-2")
        assert await log.quarantines() == []
        clock.now += REFRESH_SECONDS
        await watch.observe("bank-a", "L1", 320, await watch.mark("bank-a"), "t-3")
        assert (await log.ledger_marks())["bank-a"] == LedgerMark("bank-a", "L1", 320, 1)
        with pytest.raises(LedgerWentBack):
            await watch.observe("bank-a", "L1", 200, await watch.mark("bank-a"), "t-4")

    asyncio.run(scenario())
