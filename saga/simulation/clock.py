"""An asyncio event loop on a virtual clock: waiting costs no real time.

A simulation has no real I/O: every service is an ASGI app in this process,
so the loop never needs to block in ``select``. Instead, the selector
advances a virtual clock by exactly the timeout the loop asked to wait and
reports nothing ready; the loop then runs the timers that are due. Retry
backoffs, request timeouts and network latency cost nothing, and the order
in which things happen depends only on the program, never on the machine's
speed: the same seed gives the same run.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine, Iterator, Mapping
from concurrent.futures import Executor
from typing import Any, TypeVar, TypeVarTuple

_Result = TypeVar("_Result")
_Arguments = TypeVarTuple("_Arguments")


class SimulationDeadlock(RuntimeError):
    """Every task waits for something no timer will ever bring: the run can never finish."""


class VirtualClock:
    """Seconds since the simulation started; moves only when the loop would otherwise wait."""

    def __init__(self) -> None:
        self.now = 0.0

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _file_descriptor(fileobj: Any) -> int:
    return fileobj if isinstance(fileobj, int) else int(fileobj.fileno())


class _KeysByDescriptor(Mapping[Any, selectors.SelectorKey]):
    """The selector's map, looked up by file object or descriptor alike, as the stdlib's is."""

    def __init__(self, keys: dict[int, selectors.SelectorKey]) -> None:
        self._keys = keys

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys[_file_descriptor(fileobj)]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class VirtualClockSelector(selectors.BaseSelector):
    """A selector that never polls: ``select(timeout)`` moves the clock on by ``timeout``.

    The loop registers its self-pipe here (it exists to wake the loop from
    other threads); a simulation runs no other threads, so nothing is ever
    reported ready.
    """

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock
        self._keys: dict[int, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        descriptor = _file_descriptor(fileobj)
        if descriptor in self._keys:
            raise KeyError(f"{fileobj!r} is already registered")
        key = selectors.SelectorKey(fileobj, descriptor, events, data)
        self._keys[descriptor] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(_file_descriptor(fileobj))

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            # A real loop would block forever here: no callback is ready and
            # no timer is scheduled, so no task can ever be woken.
            raise SimulationDeadlock("every task is waiting and no timer is scheduled")
        if timeout > 0:
            self._clock.advance(timeout)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return _KeysByDescriptor(self._keys)

    def close(self) -> None:
        self._keys.clear()


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` is the virtual clock.

    Work handed to threads would run on the real clock and in a
    nondeterministic order, so ``run_in_executor`` refuses.
    """

    #: Read by saga.steps.timing_clock: durations are measured on this loop's clock, not the machine's.
    virtual_time = True

    def __init__(self) -> None:
        self.clock = VirtualClock()
        super().__init__(selector=VirtualClockSelector(self.clock))

    def time(self) -> float:
        return self.clock.now

    def run_in_executor(
        self, executor: Executor | None, func: Callable[[*_Arguments], _Result], *args: *_Arguments
    ) -> asyncio.Future[_Result]:
        raise RuntimeError(
            f"a simulation runs no threads: {getattr(func, '__qualname__', func)!r} was sent to an executor"
        )


def run_in_virtual_time(main: Coroutine[Any, Any, _Result]) -> _Result:
    """Run ``main`` to completion on a fresh virtual-time loop, then close the loop."""
    with asyncio.Runner(loop_factory=VirtualTimeEventLoop) as runner:
        return runner.run(main)
