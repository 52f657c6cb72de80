"""How runs are reported: a table of seeds, and for each violation what broke, where, and how to see it again."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from saga.simulation.faults import (
    CRASH,
    DELAY_REORDER,
    DUPLICATE_LATE,
    FAULT_CLASSES,
    INJECTED_500,
    LOG_ROLLBACK,
    OUTAGE,
    PAUSE,
    REQUEST_LOST,
    RESPONSE_LOST,
    SERVICE_RESTART,
    STALE_CREDENTIALS,
)
from saga.simulation.simulator import SimulationResult
from saga.states import SagaState

#: How much of each implicated saga's story a violation report tells.
SAGAS_SHOWN = 3
EVENTS_PER_SAGA = 16
VIOLATIONS_SHOWN = 12

_STATES = (SagaState.COMPLETED, SagaState.COMPENSATED, SagaState.FAILED)


def table(results: Sequence[SimulationResult]) -> str:
    """One row per seed and a total row: sagas by end state, faults by class, violations."""
    header = ["seed", "sagas", *(state.value.lower() for state in _STATES), "abandoned", *FAULT_CLASSES, "violations"]
    rows = [_row(str(result.config.seed), [result]) for result in results]
    if len(results) > 1:
        rows.append(_row("total", results))
    widths = [max(len(header[column]), *(len(row[column]) for row in rows)) for column in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) for line in [header, *rows]]
    return "\n".join(lines)


#: What operators did, in report order (see SimulationResult.operator_actions).
OPERATOR_ACTIONS = ("cancel", "cancel_refused", "retry", "retry_refused")


def deadlines_and_operators(results: Sequence[SimulationResult]) -> str:
    """One row per seed and a total row: sagas with a deadline, those it cut short, and what operators did.

    ``cancel`` and ``retry`` count the actions the log took, ``*_refused`` those it refused
    (a cancel that lost its race with a claim, a retry of a saga no longer COMPENSATING).
    """
    header = ["seed", "deadlines", "expired", *OPERATOR_ACTIONS]
    rows = [_operators_row(str(result.config.seed), [result]) for result in results]
    if len(results) > 1:
        rows.append(_operators_row("total", results))
    widths = [max(len(header[column]), *(len(row[column]) for row in rows)) for column in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) for line in [header, *rows]]
    return "\n".join(lines)


def _operators_row(label: str, results: Sequence[SimulationResult]) -> list[str]:
    actions: Counter[str] = Counter()
    for result in results:
        actions.update(result.operator_actions)
    return [
        label,
        str(sum(result.deadlines for result in results)),
        str(sum(result.deadlines_expired for result in results)),
        *(str(actions[action]) for action in OPERATOR_ACTIONS),
    ]


def _row(label: str, results: Sequence[SimulationResult]) -> list[str]:
    states: Counter[SagaState] = Counter()
    faults: Counter[str] = Counter()
    for result in results:
        states.update(result.states)
        faults.update(result.fault_counts)
    return [
        label,
        str(sum(len(result.sagas) for result in results)),
        *(str(states[state]) for state in _STATES),
        str(sum(result.abandoned for result in results)),
        *(str(faults[fault]) for fault in FAULT_CLASSES),
        str(sum(len(result.violations) for result in results)),
    ]


#: What each column of the two tables counts, in their order: the legend printed under them.
COLUMNS = (
    ("seed", "the run's seed: it decides the workload and every fault, so a seed replays exactly"),
    ("sagas", "transfers the orchestrators logged as sagas"),
    ("completed", "sagas that moved the money"),
    ("compensated", "sagas that gave back what they had started: no money moved"),
    ("failed", "sagas that ended before any money moved: a debit refused, or a deadline passed first"),
    ("abandoned", "planned transfers an orchestrator crash cut off before they were logged"),
    (REQUEST_LOST, "requests dropped on the way to a service"),
    (RESPONSE_LOST, "requests a service applied whose answer was lost"),
    (DUPLICATE_LATE, "requests delivered once more, up to a minute later"),
    (DELAY_REORDER, "requests slowed down so that others overtook them"),
    (INJECTED_500, "the accounts service's own 500s on /credit, before or after it applied the credit"),
    (OUTAGE, "times a service dropped or held all its traffic for 0.3-3 s"),
    (CRASH, "orchestrator crashes: their sagas were taken over once their leases ran out"),
    (PAUSE, "orchestrators paused past their leases: their late commits must be refused"),
    (SERVICE_RESTART, "accounts-service crashes, each followed by a restart over the same store"),
    (STALE_CREDENTIALS, "times a service refused the orchestrators' token (401) for a while"),
    (LOG_ROLLBACK, "restores of the saga log from an earlier copy"),
    ("violations", "invariants broken: each is described below the tables, with the command that replays it"),
    ("deadlines", "sagas with a deadline"),
    ("expired", "sagas their deadline cut short (code deadline_exceeded)"),
    ("cancel", "operators' cancels of a PENDING saga that the log took"),
    ("cancel_refused", "cancels that lost their race with a claim (a normal refusal)"),
    ("retry", "operators' requests to retry a COMPENSATING saga at once that the log took"),
    ("retry_refused", "retries refused: the saga was no longer COMPENSATING"),
)


def legend() -> str:
    """One line per column of both tables: what it counts."""
    width = max(len(name) for name, _ in COLUMNS)
    return "\n".join(["columns:", *(f"  {name:<{width}}  {meaning}" for name, meaning in COLUMNS)])


def verdict(results: Sequence[SimulationResult], seeds_asked: int) -> str:
    """The one line a run ends with: PASSED only when every seed asked for ran and none broke an invariant."""
    transfers = f"{results[0].config.transfers:,}" if results else "0"
    broken = [result for result in results if result.violations]
    if not broken and len(results) == seeds_asked:
        return f"simulation PASSED: {_count(len(results), 'seed')} x {transfers} transfers, 0 violations"
    line = "simulation FAILED: "
    if broken:
        seeds = ", ".join(str(result.config.seed) for result in broken)
        violations = sum(len(result.violations) for result in broken)
        line += (
            f"{len(broken)} of {len(results)} seeds broke an invariant (seed{'s' if len(broken) > 1 else ''} {seeds}), "
            f"{_count(violations, 'violation')}, {transfers} transfers each"
        )
    if len(results) < seeds_asked:
        line += f"{'; ' if broken else ''}{seeds_asked - len(results)} of {seeds_asked} seeds not run"
        line += " (--fail-fast stops at the first that breaks one)" if broken else ""
    return line


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def violation_report(result: SimulationResult) -> str:
    """What broke in one run, the story of the sagas involved, and the command that replays it."""
    seed = result.config.seed
    lines = [f"seed {seed}: {len(result.violations)} invariant(s) broken"]
    for violation in result.violations[:VIOLATIONS_SHOWN]:
        lines.append(f"  VIOLATED {violation.invariant}: {violation.detail}")
    if len(result.violations) > VIOLATIONS_SHOWN:
        lines.append(f"  ... and {len(result.violations) - VIOLATIONS_SHOWN} more")
    # A violation naming one saga points at the culprit; one naming many
    # (every saga that touched an account) only at the suspects.
    by_precision = sorted(result.violations, key=lambda violation: len(violation.transaction_ids) != 1)
    implicated = list(
        dict.fromkeys(transaction_id for violation in by_precision for transaction_id in violation.transaction_ids)
    )
    records = {record.transaction_id: record for record in result.sagas}
    for transaction_id in implicated[:SAGAS_SHOWN]:
        record = records.get(transaction_id)
        if record is None:
            lines.append(f"  saga {transaction_id}: not in the saga log")
        else:
            lines.append(
                f"  saga {transaction_id}: {record.state.value}, {record.amount} from {record.source} "
                f"to {record.target}{f' ({record.last_error})' if record.last_error else ''}"
            )
        events = result.trace_of(transaction_id)
        for event in events[:EVENTS_PER_SAGA]:
            lines.append(f"    {event}")
        if len(events) > EVENTS_PER_SAGA:
            lines.append(f"    ... {len(events) - EVENTS_PER_SAGA} more events")
    if len(implicated) > SAGAS_SHOWN:
        lines.append(f"  ... and {len(implicated) - SAGAS_SHOWN} more sagas implicated")
    if not implicated:
        lines.append("  no single saga is implicated: rerun with --show-trace for the whole trace")
    lines.append(f"  reproduce: {result.config.command()}")
    return "\n".join(lines)


def as_json(result: SimulationResult) -> dict[str, Any]:
    return {
        "seed": result.config.seed,
        "transfers": result.config.transfers,
        "services": result.config.services,
        "concurrency": result.config.concurrency,
        "sagas": len(result.sagas),
        "states": {state.value: result.states[state] for state in _STATES},
        "abandoned": result.abandoned,
        "requests": result.requests,
        "faults": {fault: result.fault_counts.get(fault, 0) for fault in FAULT_CLASSES},
        "deadlines": result.deadlines,
        "deadlines_expired": result.deadlines_expired,
        "cancelled": result.states[SagaState.CANCELLED],
        "operator_actions": {action: result.operator_actions.get(action, 0) for action in OPERATOR_ACTIONS},
        "violations": [
            {
                "invariant": violation.invariant,
                "detail": violation.detail,
                "transaction_ids": list(violation.transaction_ids),
            }
            for violation in result.violations
        ],
        "trace_digest": result.trace_digest,
        "virtual_seconds": round(result.virtual_seconds, 3),
        "wall_seconds": round(result.wall_seconds, 3),
        "reproduce": result.config.command(),
    }
