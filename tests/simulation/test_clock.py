"""The virtual-time event loop: waiting is free, order is by deadline, and threads are refused."""

from __future__ import annotations

import asyncio
import time

import pytest

from saga.simulation.clock import SimulationDeadlock, run_in_virtual_time


def test_an_hour_of_sleep_passes_on_the_virtual_clock_in_no_real_time() -> None:
    async def sleep_an_hour() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.sleep(3600)
        return loop.time() - started

    wall_started = time.perf_counter()
    assert run_in_virtual_time(sleep_an_hour()) == pytest.approx(3600)
    assert time.perf_counter() - wall_started < 1.0


def test_a_timeout_fires_on_the_virtual_clock() -> None:
    async def wait_for_nothing_with_a_timeout() -> None:
        async with asyncio.timeout(5):
            await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        run_in_virtual_time(wait_for_nothing_with_a_timeout())


def test_timers_fire_in_deadline_order_whatever_order_they_were_set_in() -> None:
    async def wake_up_order() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        woken: list[tuple[str, float]] = []

        async def sleeper(name: str, seconds: float) -> None:
            await asyncio.sleep(seconds)
            woken.append((name, loop.time()))

        await asyncio.gather(sleeper("late", 3.0), sleeper("early", 1.0), sleeper("middle", 2.0))
        return woken

    assert run_in_virtual_time(wake_up_order()) == [("early", 1.0), ("middle", 2.0), ("late", 3.0)]


def test_waiting_for_what_no_timer_will_bring_is_reported_as_a_deadlock() -> None:
    async def wait_forever() -> None:
        await asyncio.Event().wait()

    with pytest.raises(SimulationDeadlock):
        run_in_virtual_time(wait_forever())


def test_work_sent_to_a_thread_is_refused() -> None:
    async def sleep_in_a_thread() -> None:
        await asyncio.to_thread(time.sleep, 0)

    with pytest.raises(RuntimeError, match="no threads"):
        run_in_virtual_time(sleep_in_a_thread())
