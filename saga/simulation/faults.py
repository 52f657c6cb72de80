"""The fault plan's knobs, the classes of faults it injects, and the trace it leaves."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Final

REQUEST_LOST: Final = "request_lost"
RESPONSE_LOST: Final = "response_lost"
DUPLICATE_LATE: Final = "duplicate_late"
DELAY_REORDER: Final = "delay_reorder"
INJECTED_500: Final = "injected_500"
OUTAGE: Final = "outage"
CRASH: Final = "crash"
PAUSE: Final = "pause"
SERVICE_RESTART: Final = "service_restart"
STALE_CREDENTIALS: Final = "stale_credentials"
LOG_ROLLBACK: Final = "log_rollback"

#: Every class of fault a run injects, in report order. A standard run must
#: inject each of them at least once, or the simulator proves nothing.
FAULT_CLASSES: Final = (
    REQUEST_LOST,
    RESPONSE_LOST,
    DUPLICATE_LATE,
    DELAY_REORDER,
    INJECTED_500,
    OUTAGE,
    CRASH,
    PAUSE,
    SERVICE_RESTART,
    STALE_CREDENTIALS,
    LOG_ROLLBACK,
)


@dataclass(frozen=True)
class MillisecondRange:
    """Whole milliseconds from ``low`` to ``high`` inclusive.

    Latencies are whole milliseconds so that requests from concurrent sagas
    often land in the same instant, where check-then-act races show up.
    """

    low: int
    high: int

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high:
            raise ValueError("a millisecond range needs 0 <= low <= high")


@dataclass(frozen=True)
class FaultRates:
    """Per-request probabilities of each network fault, and the server's own fault rates.

    The defaults inject every class of fault several times in a run of a
    couple of hundred transfers.
    """

    #: Dropped before it reaches the server: the client sees a connection error.
    request_lost: float = 0.03
    #: Applied by the server, but the answer never arrives.
    response_lost: float = 0.03
    #: Of the lost answers, the share that hangs until the saga's request
    #: timeout instead of failing fast with a read timeout.
    response_hangs: float = 0.5
    #: Delivered once more, later, after the saga may have moved on or compensated.
    duplicate_late: float = 0.05
    duplicate_delay_ms: MillisecondRange = field(default_factory=lambda: MillisecondRange(10, 60_000))
    #: Each leg of every request takes this long...
    latency_ms: MillisecondRange = field(default_factory=lambda: MillisecondRange(0, 3))
    #: ...and with this probability much longer, so concurrent requests overtake each other.
    slow: float = 0.1
    slow_latency_ms: MillisecondRange = field(default_factory=lambda: MillisecondRange(20, 500))
    #: Per request, the chance that one service becomes unreachable for a
    #: while: its requests are dropped, or (half the time) its answers are.
    outage: float = 1 / 200
    outage_ms: MillisecondRange = field(default_factory=lambda: MillisecondRange(300, 3_000))
    #: Per request, the chance that one orchestrator crashes (or pauses) soon after it is sent.
    crash: float = 1 / 150
    #: Of those, the share that pause the orchestrator (SIGSTOP, a long GC) past its lease instead.
    pause: float = 0.5
    pause_ms: MillisecondRange = field(default_factory=lambda: MillisecondRange(20_000, 30_000))
    #: Per request, the chance that one accounts service's process dies: every
    #: request it holds or has on the wire is lost, and after the downtime a
    #: new app comes up over the same (durable) store.
    service_restart: float = 1 / 250
    restart_downtime_ms: MillisecondRange = field(default_factory=lambda: MillisecondRange(50, 1_500))
    #: Per request, the chance that one service stops taking the orchestrators'
    #: token for a while (its credentials rotated before theirs did): it
    #: answers every ledger request 401, a refusal it does not record.
    credential_rotation: float = 1 / 500
    credential_rotation_ms: MillisecondRange = field(default_factory=lambda: MillisecondRange(500, 5_000))
    #: Per poll, once a copy of the saga log from a few seconds ago holds a
    #: saga in a forward state that has moved on since, the chance that the
    #: log is restored from that copy (every orchestrator is stopped first, as
    #: for a real restore); at most ``log_rollbacks`` times a run.
    log_rollback: float = 0.05
    log_rollbacks: int = 1
    #: How long a saga log commit takes (an fsync, say); a crash can land in the middle.
    log_commit_ms: MillisecondRange = field(default_factory=lambda: MillisecondRange(0, 2))
    #: The accounts service's own injected 500s on /credit.
    credit_fault_rate: float = 0.3
    credit_fault_after_commit_rate: float = 0.05
    #: An operator looks at the console every so often (virtual time); each
    #: look, with these chances, cancels a PENDING saga (racing the
    #: orchestrators' claims: the log lets exactly one win) and asks for a
    #: COMPENSATING one to be tried again at once. Between reading the
    #: console and acting, the operator thinks a while.
    operator_look_ms: MillisecondRange = field(default_factory=lambda: MillisecondRange(200, 1_500))
    operator_cancel: float = 0.5
    operator_retry: float = 0.5
    operator_think_ms: MillisecondRange = field(default_factory=lambda: MillisecondRange(0, 400))

    def __post_init__(self) -> None:
        for name in (
            "request_lost",
            "response_lost",
            "response_hangs",
            "duplicate_late",
            "slow",
            "outage",
            "crash",
            "pause",
            "service_restart",
            "credential_rotation",
            "log_rollback",
            "credit_fault_rate",
            "credit_fault_after_commit_rate",
            "operator_cancel",
            "operator_retry",
        ):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be a probability from 0 to 1, got {rate}")


def no_faults() -> FaultRates:
    """A fault plan that injects nothing at all, and no operator acts: for checking the simulator's own plumbing."""
    return FaultRates(
        request_lost=0.0,
        response_lost=0.0,
        duplicate_late=0.0,
        slow=0.0,
        outage=0.0,
        crash=0.0,
        service_restart=0.0,
        credential_rotation=0.0,
        log_rollback=0.0,
        credit_fault_rate=0.0,
        credit_fault_after_commit_rate=0.0,
        operator_cancel=0.0,
        operator_retry=0.0,
    )


def fault_counter() -> Counter[str]:
    """A counter with every fault class present, so a class never injected shows as 0."""
    return Counter(dict.fromkeys(FAULT_CLASSES, 0))


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One thing that happened in a run, on the virtual clock.

    ``kind`` is ``send`` (a saga's request, with the network's decision and
    the server's answer), ``duplicate`` (a late copy of an earlier request
    landing), ``dropped`` (a request or answer lost with a crashed service),
    ``outage``, ``down`` and ``up`` (a service crashing and coming back),
    ``crash`` or ``recover`` (the orchestrator's).
    """

    at_ms: int
    kind: str
    transaction_id: str = ""
    step: str = ""
    service: str = ""
    fault: str = ""
    answer: str = ""

    def __str__(self) -> str:
        parts = [f"{self.at_ms:>9}ms", f"{self.kind:<9}"]
        if self.transaction_id:
            parts.append(self.transaction_id)
        if self.step:
            parts.append(f"{self.step}@{self.service}")
        elif self.service:
            parts.append(self.service)
        if self.fault:
            parts.append(f"[{self.fault}]")
        if self.answer:
            parts.append(f"-> {self.answer}")
        return " ".join(parts)
