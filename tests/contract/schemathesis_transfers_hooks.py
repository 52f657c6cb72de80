"""Schemathesis hooks and checks of the transfers service beyond the built-in ones.

Loaded by the schemathesis CLI through ``SCHEMATHESIS_HOOKS=<path of this file>``
(see run_schemathesis_transfers.py), and imported by
test_schemathesis_transfers.py. Each hook and check touches the transfers
contract's operations alone, so importing it beside schemathesis_hooks.py
leaves the accounts runs as they were.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import schemathesis

#: The accounts services the contract runs start the transfers service with;
#: schemathesis-transfers.toml draws request bodies' service names from them.
SERVICES = ("bank-a", "bank-b")

CREATE_TRANSFER: Final = "POST /transfers"
CANCEL: Final = "POST /transfers/{transaction_id}/cancel"
RETRY: Final = "POST /transfers/{transaction_id}/retry"
RESOLVE: Final = "POST /transfers/{transaction_id}/resolve"

#: The operators' actions, each with the 409 codes the contract gives for it (ActionRefused).
ACTION_REFUSALS: Final[Mapping[str, frozenset[str]]] = {
    CANCEL: frozenset({"transfer_in_progress", "transfer_already_ended"}),
    RETRY: frozenset({"transfer_not_retryable"}),
    RESOLVE: frozenset({"transfer_not_awaiting_operator"}),
}
ACTIONS: Final = frozenset(ACTION_REFUSALS)

CONTRACT_OPERATIONS = frozenset(
    {
        CREATE_TRANSFER,
        "GET /transfers",
        "GET /transfers/{transaction_id}",
        "GET /transfers/{transaction_id}/events",
        *ACTIONS,
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
    }
)

# -- deadlines: the rule outside the schema -------------------------------------------

#: A deadline further ahead than this is refused (saga/deadlines.py: a mistake of units).
MAX_DEADLINE_AHEAD: Final = timedelta(days=365)
#: Where the hook moves most generated deadlines: this far ahead of when the process first needed one.
DEADLINE_AHEAD: Final = timedelta(hours=1)
#: One generated deadline in this many is sent as generated (almost always past or years ahead: a 422).
KEEP_ONE_DEADLINE_IN: Final = 10
#: RFC 3339's date-time, the contract's `format: date-time`: the only strings the hook rewrites.
RFC3339_DATE_TIME: Final = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<time>\d{2}:\d{2}:\d{2}(?:\.\d+)?)(?P<zone>[Zz]|[+-]\d{2}:\d{2})?"
)
#: Leeway at the edges of the rule: the check reads the clock after the service did.
CLOCK_SLACK: Final = timedelta(seconds=5)

_anchor: datetime | None = None


def deadline_anchor() -> datetime:
    """The deadline this process moves generated ones to: an hour after its first use, to the second.

    One instant for a whole schemathesis run, so a request sent again under
    the same Idempotency-Key (a replay) carries the same body; a process that
    lives longer (a pytest session) gets a new one once half the hour is gone.
    """
    global _anchor
    now = datetime.now(UTC)
    if _anchor is None or _anchor - now < DEADLINE_AHEAD / 2:
        _anchor = (now + DEADLINE_AHEAD).replace(microsecond=0)
    return _anchor


def parse_deadline(value: str) -> datetime | None:
    """An RFC 3339 date-time (naive when it has no zone), or None for any other string."""
    match = RFC3339_DATE_TIME.fullmatch(value)
    if match is None:
        return None
    fraction_free, _, fraction = match["time"].partition(".")
    zone = match["zone"]
    offset = "+00:00" if zone is None or zone in "Zz" else zone
    try:
        moment = datetime.fromisoformat(f"{match['date']}T{fraction_free}{offset}")
    except ValueError:
        # Day 31 of a month of 30, hour 24, an offset of 25 hours...: not a time at all.
        return None
    moment += timedelta(microseconds=int(fraction[:6].ljust(6, "0"))) if fraction else timedelta()
    return moment if zone is not None else moment.replace(tzinfo=None)


def why_a_deadline_is_refused(value: Any, now: datetime | None = None) -> str | None:
    """Which rule outside the schema refuses ``value`` as a deadline at ``now`` (None: it is a good one)."""
    if not isinstance(value, str):
        return None
    moment = parse_deadline(value)
    if moment is None:
        return None
    if moment.tzinfo is None:
        return "a deadline without a time zone"
    now = now or datetime.now(UTC)
    try:
        ahead = moment - now
    except OverflowError:
        return None
    if ahead <= CLOCK_SLACK:
        return "a deadline that has passed"
    if ahead > MAX_DEADLINE_AHEAD - CLOCK_SLACK:
        return "a deadline more than a year ahead"
    return None


def usual_deadline(value: Any) -> Any:
    """A generated deadline as the hook sends it: most go an hour ahead; other values stay as they are.

    Only a string that is already an RFC 3339 date-time, time zone included,
    is moved, to another one, so a case stays as valid or as invalid as it
    was generated. A deadline already ahead (and within a year) stays; of the
    others (the generator draws from year 1 to 9999), one in
    KEEP_ONE_DEADLINE_IN, chosen by the value itself so a case sent again is
    sent the same, stays as drawn: the service must refuse it with 422
    ``invalid_request``, and the custom check takes that.
    """
    moment = parse_deadline(value) if isinstance(value, str) else None
    if moment is None or moment.tzinfo is None:
        # Not a date-time as RFC 3339 has it (the zone is not optional there): left as drawn.
        return value
    if why_a_deadline_is_refused(value) is None:
        return value
    if zlib.crc32(value.encode()) % KEEP_ONE_DEADLINE_IN == 0:
        return value
    return deadline_anchor().strftime("%Y-%m-%dT%H:%M:%SZ")


@schemathesis.hook("before_call")
def transfers_deadlines_are_mostly_ahead(ctx: schemathesis.HookContext, case: schemathesis.Case[Any], **_: Any) -> None:
    """Move a drawn ``deadline`` of POST /transfers an hour ahead, in most cases: see :func:`usual_deadline`.

    In before_call, so it reaches every phase (examples, coverage, fuzzing,
    stateful) alike; schemathesis revalidates the case after the hook, and
    the valid/invalid label a case carries does not change.
    """
    if case.operation.label != CREATE_TRANSFER or not isinstance(case.body, dict) or "deadline" not in case.body:
        return
    deadline = usual_deadline(case.body["deadline"])
    if deadline != case.body["deadline"]:
        case.body = {**case.body, "deadline": deadline}


# -- checks ---------------------------------------------------------------------------


def _problem_code(response: schemathesis.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def names_an_unknown_service(body: Any) -> bool:
    return isinstance(body, dict) and any(
        isinstance(account, dict) and account.get("service") not in SERVICES
        for account in (body.get("source"), body.get("target"))
    )


def names_one_account_twice(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("source"), dict) and body.get("source") == body.get("target")


def why_valid_data_may_meet_422(case: schemathesis.Case[Any], code: Any) -> str | None:
    """The rule outside the schema that lets this valid request meet 422 ``code``, or None.

    The operators' actions have none: a schema-valid reason (and resolution)
    is one the service takes.
    """
    label = case.operation.label
    if label == CREATE_TRANSFER:
        if code == "idempotency_key_reused":
            # A generated key often repeats with another body; only the service knows it does.
            return "the key was used for another transfer"
        if code == "unknown_service" and names_an_unknown_service(case.body):
            return "a service name the transfers service was not started with"
        if code == "invalid_request" and names_one_account_twice(case.body):
            return "the same account as source and target"
        if code == "invalid_request" and isinstance(case.body, dict):
            # The schema says date-time; only the clock says past, or too far ahead.
            return why_a_deadline_is_refused(case.body.get("deadline"))
    if label == "GET /transfers" and code == "invalid_request" and "after" in (case.query or {}):
        # A cursor is opaque: the schema admits any token, the service only the ones it gave out.
        return "a cursor this service did not give out"
    return None


@schemathesis.check
def transfers_valid_data_is_never_called_invalid(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> None:
    """Valid data may meet a 422 only for a rule the schema cannot state.

    schemathesis-transfers.toml lets ``positive_data_acceptance`` take a 422
    on POST and GET /transfers; this check keeps that allowance to the rules
    in :func:`why_valid_data_may_meet_422`, each tested against the request
    itself where the request shows it, and fails any other 422 on valid data.
    """
    meta = case.meta
    if case.operation.label not in CONTRACT_OPERATIONS or meta is None or not meta.generation.mode.is_positive:
        return
    if response.status_code != 422:
        return
    code = _problem_code(response)
    if why_valid_data_may_meet_422(case, code) is None:
        raise AssertionError(
            f"{case.operation.label}: valid data was refused with 422 {code!r}, "
            "which no rule outside the schema explains"
        )


def what_an_action_answer_breaks(case: schemathesis.Case[Any], status: int, body: Any) -> str | None:
    """What an answer of an operator's action says that the contract rules out, or None."""
    label = case.operation.label
    code = body.get("code") if isinstance(body, dict) else None
    if status == 409 and code not in ACTION_REFUSALS[label]:
        allowed = ", ".join(sorted(ACTION_REFUSALS[label]))
        return f"409 {code!r}: this action is refused only as {allowed}"
    if status == 403 and code != "operator_only":
        return f"403 {code!r}: an action is forbidden only as operator_only"
    if status == 200 and isinstance(body, dict):
        state = body.get("state")
        if label == CANCEL and state != "CANCELLED":
            return f"200 with the transfer {state}: a cancel that lands ends the transfer CANCELLED"
        if label == RESOLVE:
            resolution = case.body.get("resolution") if isinstance(case.body, dict) else None
            if state != "RESOLVED" or body.get("code") != resolution:
                return (
                    f"200 with the transfer {state} (code {body.get('code')!r}): "
                    f"a resolve that lands ends it RESOLVED with the code {resolution!r}"
                )
    return None


@schemathesis.check
def transfers_actions_answer_as_their_operation_says(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> None:
    """An action is refused only for its own reasons, and one that lands leaves the state it names.

    positive_data_acceptance takes any 409 and 403; this check keeps each
    action's 409s to the codes the contract gives for it (a cancel meets
    ``transfer_in_progress`` when the saga's run took it up first: valid, and
    expected, for a transfer just submitted), every 403 to
    ``operator_only``, and checks that a cancel answered 200 shows the
    transfer CANCELLED and a resolve RESOLVED with the resolution asked for.
    """
    if case.operation.label not in ACTIONS:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    broken = what_an_action_answer_breaks(case, response.status_code, body)
    if broken is not None:
        raise AssertionError(f"{case.operation.label}: {broken}")
