"""Deterministic fault simulation of the transfer saga, after TigerBeetle's VOPR and Jepsen's bank test.

The real saga (orchestrator, workflow, memory log) runs against the real
accounts service apps, in one process, on a virtual clock, through a seeded
faulty network; a crash cancels every saga mid-step and a fresh
orchestrator recovers them. Afterwards the ledgers must agree with the
sagas to the cent. The same seed always replays the same run.

    result = simulate(seed=7, transfers=200)
    assert not result.violations, result.violations

Names are imported on first use, so that adding the ``simulate`` command to
another CLI does not import the accounts service.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from saga.simulation.faults import FAULT_CLASSES, FaultRates, TraceEvent, no_faults
    from saga.simulation.simulator import SimulationConfig, SimulationResult, run_simulation, simulate
    from saga.simulation.workload import WorkloadShape

__all__ = [
    "FAULT_CLASSES",
    "FaultRates",
    "SimulationConfig",
    "SimulationResult",
    "TraceEvent",
    "WorkloadShape",
    "no_faults",
    "run_simulation",
    "simulate",
]

_HOMES = MappingProxyType(
    {
        "FAULT_CLASSES": "saga.simulation.faults",
        "FaultRates": "saga.simulation.faults",
        "TraceEvent": "saga.simulation.faults",
        "no_faults": "saga.simulation.faults",
        "SimulationConfig": "saga.simulation.simulator",
        "SimulationResult": "saga.simulation.simulator",
        "run_simulation": "saga.simulation.simulator",
        "simulate": "saga.simulation.simulator",
        "WorkloadShape": "saga.simulation.workload",
    }
)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
