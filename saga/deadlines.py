"""A transfer's deadline: an aware time, ahead of now and at most a year ahead; and times as the CLI and API show them.

After it the saga sends no new forward request (see saga/workflow.py). The
same rule holds for the API, the CLI and the simulator; a deadline further
ahead than a year is taken for a mistake of units.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

MAX_AHEAD: Final = timedelta(days=365)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND: Final = timedelta(milliseconds=1)


def epoch_ms(moment: datetime) -> int:
    """An aware time as whole milliseconds since the epoch, in integer arithmetic (finer parts dropped)."""
    return (moment - _EPOCH) // _MILLISECOND


def iso_time(at_ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 in UTC, to the millisecond, as the transfers API writes times."""
    whole = datetime.fromtimestamp(at_ms // 1000, UTC)
    return whole.strftime("%Y-%m-%dT%H:%M:%S") + f".{at_ms % 1000:03d}Z"


def deadline_problem(deadline: datetime, now_ms: int) -> str | None:
    """Why ``deadline`` cannot be a transfer's deadline at ``now_ms``, or None when it can."""
    if deadline.tzinfo is None or deadline.utcoffset() is None:
        return f"{deadline.isoformat()} has no time zone (end it with Z or +HH:MM)"
    at_ms = epoch_ms(deadline)
    if at_ms <= now_ms:
        return f"{deadline.isoformat()} has passed"
    if at_ms - now_ms > MAX_AHEAD // _MILLISECOND:
        return f"{deadline.isoformat()} is more than a year ahead"
    return None
