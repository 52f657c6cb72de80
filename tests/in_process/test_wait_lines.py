"""The lines on stderr that say what a saga waits on (saga/cli/terminal.py's WaitLines)."""

from __future__ import annotations

import asyncio
import io

import pytest

from saga.cli.terminal import WaitLines, duration
from saga.records import Attempt
from saga.waits import Backoff, RequestOut

TID = "t-1"
URL = "http://bank-b.test"


def request(attempt: int = 1, transaction_id: str = TID) -> RequestOut:
    return RequestOut(transaction_id, "credit", attempt, 3, URL, 5.0)


def test_a_backoff_says_which_attempt_failed_why_and_when_the_next_goes() -> None:
    err = io.StringIO()
    lines = WaitLines(err, own=TID)
    unavailable = Attempt("credit", 3, 503, "service_unavailable", 1_200, url=URL)
    lines.backing_off(Backoff(TID, unavailable, 8, 1.6))
    timed_out = Attempt("compensate_credit", 4, None, None, 5_000_000, "timeout", URL)
    lines.backing_off(Backoff(TID, timed_out, None, 0.04))
    bare = Attempt("debit", 1, 500, None, 900, url=URL)
    lines.backing_off(Backoff(TID, bare, 5, 0.0))
    assert err.getvalue().splitlines() == [
        "waiting: credit attempt 3 of 8 failed (503 service_unavailable); next try in 1.6 s",
        "waiting: compensate_credit attempt 4 failed (timeout); next try in 40 ms",
        "waiting: debit attempt 1 of 5 failed (500); next try in 0 ms",
    ]


def test_a_saga_other_than_the_commands_own_is_named() -> None:
    err = io.StringIO()
    lines = WaitLines(err, own=TID)
    lines.backing_off(Backoff("t-recovered", Attempt("debit", 1, None, None, 5, "timeout"), 5, 2.0))
    unnamed = WaitLines(err)
    unnamed.backing_off(Backoff(TID, Attempt("debit", 2, None, None, 5, "timeout"), 5, 2.0))
    assert err.getvalue().splitlines() == [
        "waiting: saga t-recovered: debit attempt 1 of 5 failed (timeout); next try in 2.0 s",
        f"waiting: saga {TID}: debit attempt 2 of 5 failed (timeout); next try in 2.0 s",
    ]


def test_a_request_is_told_of_only_once_it_goes_unanswered_for_a_while() -> None:
    async def scenario() -> str:
        err = io.StringIO()
        lines = WaitLines(err, own=TID, slow_after=0.05)
        quick, slow = request(1), request(2)
        lines.sending(quick)
        lines.answered(quick)
        lines.sending(slow)
        await asyncio.sleep(0.2)
        lines.answered(slow)
        await asyncio.sleep(0.1)
        return err.getvalue()

    assert asyncio.run(scenario()).splitlines() == [
        f"waiting: credit attempt 2 of 3 sent to {URL}: no answer after 50 ms; it times out at 5.0 s"
    ]


def test_closing_says_nothing_more_of_the_requests_still_out() -> None:
    async def scenario() -> str:
        err = io.StringIO()
        lines = WaitLines(err, own=TID, slow_after=0.05)
        lines.sending(request())
        lines.close()
        await asyncio.sleep(0.15)
        return err.getvalue()

    assert asyncio.run(scenario()) == ""


@pytest.mark.parametrize(("seconds", "shown"), [(0.0, "0 ms"), (0.0214, "21 ms"), (0.999, "999 ms"), (1.0, "1.0 s")])
def test_a_duration_is_in_milliseconds_under_a_second_and_in_seconds_above(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown
