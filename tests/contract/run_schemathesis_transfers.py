"""Run the schemathesis CLI against a live transfers service: its contract's conformance run.

    .venv/bin/python tests/contract/run_schemathesis_transfers.py [--max-examples N] [--workers N] [--seed N]

Each run starts two accounts services (``python -m server`` with the demo
balances of run_schemathesis.py: bank-a with credit faults off, bank-b with
30% credit faults) and a ``python -m saga serve`` that names them, each on a
free loopback port, and drives the committed openapi/transfers.yaml (not the
app's /openapi.json) with every check (the configuration's ``[checks]
enabled = true``), valid and invalid data (``--mode all``), and the stateful
phase, which follows the contract's OpenAPI links (createTransfer ->
getTransfer -> getTransferEvents) and the ones schemathesis infers, which
take the ids of real transfers to the operators' actions (cancelTransfer,
retryTransfer, resolveTransfer).

1. no tokens: the service serves anyone on loopback, and no one may act:
   every action that reaches its route is answered 403 ``operator_only``,
   even without an ``Authorization`` header (so, for the operators'
   operations alone, ``missing_required_header``, which wants 401 there, is
   off in this run), and none is ever taken.
2. a caller's token and an operator's: schemathesis sends
   ``Authorization: Bearer <operator token>``, so the actions are taken (a
   cancel of a transfer just submitted meets 200 or 409
   ``transfer_in_progress``, whichever of the operator and the saga's run is
   first); then a pass with the caller's token, where every action must be
   403 ``operator_only`` and none taken; then two passes with no token and a
   wrong one, where every answer from an operation outside /healthz and
   /readyz must be 401 ``unauthorized``.

The configuration (schemathesis-transfers.toml) draws the services a
transfer names from the ones the service was started with, and lets
``positive_data_acceptance`` take a 422 on /transfers; the custom check in
schemathesis_transfers_hooks.py fails any 422 on valid data but those the
schema cannot rule out (a reused Idempotency-Key, an unknown service, one
account named twice, a cursor the service did not give out, a deadline
past or more than a year ahead). A hook there moves most generated
deadlines an hour ahead, so valid data is mostly taken; another check keeps
each action's 409s to its own codes and its 403s to ``operator_only``.

A run also fails if the required links below were never followed, or (with
an operator) an action never reached a real transfer (200 or 409), after up
to two more stateful-only passes (while a required link is missing, one on
the contract's links alone: no inference, the ``transfers`` operations
only); if the caller's token was never served; if no transfer it submitted
completed (so valid data reached the accounts services and moved money); if
a transfer needed attention (NEEDS_ATTENTION, or RESOLVED by the run's
operator: the demo accounts services lose nothing, so automation should
finish every transfer); if a transfer ended CANCELLED that no cancel of the
run's operator answered 200 for; or if any of the three services logged a
traceback. Exits 0 only if both runs pass.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from schemathesis.core.warnings import SchemathesisWarning

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    # Run as a script, Python puts tests/contract on the path, not the repo root.
    sys.path.insert(0, str(ROOT))

from generated_client.transfers import AuthenticatedClient, Client  # noqa: E402
from generated_client.transfers.api.transfers import list_transfers  # noqa: E402
from generated_client.transfers.models import TransferPage, TransferState  # noqa: E402
from generated_client.transfers.types import UNSET, Unset  # noqa: E402
from saga.service.process import TransfersProcess  # noqa: E402
from server.process import ServerProcess  # noqa: E402
from tests.contract.run_schemathesis import ACCOUNTS  # noqa: E402
from tests.contract.schemathesis_transfers_hooks import (  # noqa: E402
    ACTIONS,
    CANCEL,
    CONTRACT_OPERATIONS,
    SERVICES,
)

HERE = Path(__file__).resolve().parent
CONTRACT = ROOT / "openapi" / "transfers.yaml"
CONFIG = HERE / "schemathesis-transfers.toml"
HOOKS = HERE / "schemathesis_transfers_hooks.py"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"

#: bank-a takes every credit; bank-b faults on 30% of them, as `python -m server` does by default.
CREDIT_FAULT_RATES = dict(zip(SERVICES, (0.0, 0.3), strict=True))
#: The caller the second run's service knows, and its token.
CALLER = "contract"
API_TOKEN = "contract-run-token"
#: The operator the second run's service knows, and its token.
OPERATOR = "contract-operator"
OPERATOR_TOKEN = "contract-operator-token"
#: Paths anyone may call, whatever tokens the service has: the contract's `security: [{}]` operations.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})

#: Test cases per operation and phase in the passes whose token may not act (a caller's, a wrong one, none).
REFUSAL_EXAMPLES = 10
#: Extra stateful-only passes allowed when the required links were not all followed, or an action not reached.
STATEFUL_TOP_UPS = 2
#: How long the sagas the run submitted get to end once it is over.
SETTLE_SECONDS = 15.0

GET_TRANSFER = r"GET /transfers/\{transaction_id\}"
GET_EVENTS = r"GET /transfers/\{transaction_id\}/events"
#: createTransfer -> getTransfer -> getTransferEvents, by the contract's own links.
REQUIRED_LINKS = (
    re.compile(rf"^POST /transfers -> \[201\] GetThisTransfer -> {GET_TRANSFER}$"),
    re.compile(rf"^POST /transfers -> \[201\] GetThisTransfersEvents -> {GET_EVENTS}$"),
    re.compile(rf"^{GET_TRANSFER} -> \[200\] GetThisTransfersEvents -> {GET_EVENTS}$"),
)

FINAL_STATES = frozenset(
    {
        TransferState.COMPLETED,
        TransferState.COMPENSATED,
        TransferState.FAILED,
        TransferState.NEEDS_ATTENTION,
        TransferState.CANCELLED,
        TransferState.RESOLVED,
    }
)

#: For the operators' operations when the token schemathesis sends cannot act (none, or a caller's):
#: every answer is 403 operator_only, so the missing_auth warning says nothing (low_valid_rate is opt-in).
_SILENCED = {SchemathesisWarning.MISSING_AUTH, SchemathesisWarning.LOW_VALID_RATE}
ACTIONS_REFUSED = f"""
[[operations]]
include-tag = "operators"
warnings = {json.dumps(sorted(set(SchemathesisWarning) - _SILENCED))}
"""
#: A service without any token answers an action without an Authorization header 403 operator_only
#: (components/responses/OperatorOnly: no one may act), where missing_required_header wants 401.
NO_AUTHORIZATION_NEEDED = """checks.missing_required_header.enabled = false
"""
#: For a stateful pass after one that missed some of the contract's links: those links alone, among
#: the `transfers` operations alone (CONTRACT_LINKS_SELECTION). The links schemathesis infers (from
#: Location, and from the ids in the answers) are three times as many, most of them to the actions,
#: and share the scenarios with the contract's.
CONTRACT_LINKS_ONLY = """
[phases.stateful.inference]
algorithms = []
"""
CONTRACT_LINKS_SELECTION = ("--include-tag", "transfers")


@dataclass(frozen=True)
class ContractRun:
    name: str
    #: A caller's token the service knows; None for a service without tokens.
    api_token: str | None
    #: An operator's token the service knows, sent in the main passes in place of the caller's; None: no operator.
    operator_token: str | None = None

    @property
    def main_token(self) -> str | None:
        """The token the main passes send: the operator's if there is one, else the caller's."""
        return self.operator_token if self.operator_token is not None else self.api_token

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(token for token in (self.api_token, self.operator_token) if token is not None)


RUNS = (
    ContractRun(name="no tokens: every check on every operation, every action 403", api_token=None),
    ContractRun(
        name="a caller's and an operator's token: every check with the operator's, every action 403 with the "
        "caller's, 401 without a token and with a wrong one",
        api_token=API_TOKEN,
        operator_token=OPERATOR_TOKEN,
    ),
)


@dataclass
class Evidence:
    """What schemathesis's NDJSON event logs say the runs did."""

    links: Counter[str] = field(default_factory=Counter)
    #: (operation, status, problem code) of every answer.
    answers: Counter[tuple[str, int, str | None]] = field(default_factory=Counter)
    #: Answers from operations that require a token, to requests without a valid one, other than 401 unauthorized.
    unrefused: list[str] = field(default_factory=list)

    def add(self, report: Path, *, refusals: bool) -> None:
        if not report.exists():
            return
        for line in report.read_text(encoding="utf-8").splitlines():
            scenario = json.loads(line).get("ScenarioFinished")
            if scenario is None:
                continue
            recorder = scenario["recorder"]
            # A scenario skipped before it sent anything records no cases.
            cases = recorder.get("cases", {})
            for case in cases.values():
                transition = case.get("transition")
                if transition:
                    self.links[transition["id"]] += 1
            for case_id, interaction in recorder.get("interactions", {}).items():
                response = interaction.get("response")
                if response is None:
                    continue
                value = cases[case_id]["value"]
                operation = f"{value['method']} {value['path']}"
                status, code = response["status_code"], _problem_code(response)
                self.answers[(operation, status, code)] += 1
                request = interaction["request"]
                path = urlsplit(request["uri"]).path
                if refusals and path not in PUBLIC_PATHS and (status, code) != (401, "unauthorized"):
                    self.unrefused.append(f"{request['method']} {path} answered {status} {code or ''}".rstrip())

    def by_operation(self) -> dict[str, str]:
        """Each contract operation's answers, as "status code xN"; the undeclared methods' answers together."""
        grouped: dict[str, Counter[str]] = {}
        for (operation, status, code), count in self.answers.items():
            name = operation if operation in CONTRACT_OPERATIONS else "undeclared methods"
            grouped.setdefault(name, Counter())[f"{status} {code}" if code else str(status)] += count
        return {
            name: ", ".join(f"{answer} x{count}" for answer, count in sorted(answers.items()))
            for name, answers in sorted(grouped.items())
        }

    def refused(self) -> int:
        return sum(
            count for (_, status, code), count in self.answers.items() if (status, code) == (401, "unauthorized")
        )

    def __iadd__(self, other: Evidence) -> Evidence:
        self.links += other.links
        self.answers += other.answers
        self.unrefused += other.unrefused
        return self

    def actions_taken(self) -> list[str]:
        """Answers of the operators' actions that show the service acted, or read the transfer, for the sender.

        2xx (acted), 409 (read the transfer's state), 404 ``unknown_transfer``
        (looked for it), or a 403 other than ``operator_only``: from a sender
        who may not act, none of them.
        """
        return [
            f"{operation} answered {status} {code or ''}".rstrip() + f" x{count}"
            for (operation, status, code), count in sorted(self.answers.items(), key=str)
            if operation in ACTIONS
            and (
                200 <= status < 300
                or status == 409
                or (status, code) == (404, "unknown_transfer")
                or (status == 403 and code != "operator_only")
            )
        ]

    def served(self) -> int:
        """Answers 2xx from the operations every valid token may call: neither an action nor a public path."""
        return sum(
            count
            for (operation, status, _), count in self.answers.items()
            if 200 <= status < 300 and operation not in ACTIONS and operation.split(" ", 1)[1] not in PUBLIC_PATHS
        )

    def forbidden(self, operation: str) -> int:
        return self.answers[(operation, 403, "operator_only")]

    def reached(self, operation: str) -> int:
        """How often ``operation`` met a real transfer: answered 200, or 409 for the state it was in."""
        return sum(
            count
            for (answered, status, _), count in self.answers.items()
            if answered == operation and status in (200, 409)
        )


def _problem_code(response: dict[str, Any]) -> str | None:
    """The problem code of an error answer; a 2xx transfer's own ``code`` is no problem's."""
    if response.get("status_code", 0) < 400:
        return None
    content = response.get("content") or {}
    try:
        body = json.loads(base64.b64decode(content["$base64"]))
    except (KeyError, TypeError, ValueError):
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


@dataclass
class Outcome:
    run: ContractRun
    returncode: int
    seconds: float
    evidence: Evidence
    states: Counter[str]
    problems: list[str]

    @property
    def passed(self) -> bool:
        return self.returncode == 0 and not self.problems


@dataclass
class Services:
    transfers: TransfersProcess
    accounts: dict[str, ServerProcess]

    def logs(self) -> dict[str, str]:
        return {"transfers": self.transfers.log()} | {name: server.log() for name, server in self.accounts.items()}


@contextmanager
def services(run: ContractRun) -> Iterator[Services]:
    with ExitStack() as stack:
        accounts = {}
        for name, rate in CREDIT_FAULT_RATES.items():
            accounts[name] = stack.enter_context(ServerProcess(ACCOUNTS, credit_fault_rate=rate))
            print(f"    accounts service {name}: {accounts[name].url}, credit_fault_rate={rate}")
        api_tokens = {CALLER: run.api_token} if run.api_token is not None else {}
        operator_tokens = {OPERATOR: run.operator_token} if run.operator_token is not None else {}
        transfers = TransfersProcess(
            {name: server.url for name, server in accounts.items()},
            api_tokens=api_tokens,
            operator_tokens=operator_tokens,
        )
        stack.enter_context(transfers)
        callers = f"API caller {CALLER!r}" if api_tokens else "no API tokens"
        operators = f"operator {OPERATOR!r}" if operator_tokens else "no operator tokens"
        print(f"    transfers service: {transfers.url}, {callers}, {operators}", flush=True)
        yield Services(transfers, accounts)


def schemathesis_command(
    url: str,
    phases: str,
    report: Path,
    authorization: str | None,
    args: argparse.Namespace,
    config: Path = CONFIG,
    selection: Sequence[str] = (),
) -> list[str]:
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "run",
        str(CONTRACT),
        "--url",
        url,
        # Every check, from the configuration's `[checks] enabled = true`
        # rather than `--checks all`: a check named on the command line
        # would win over an operation's `enabled = false` in it.
        "--mode",
        "all",
        "--phases",
        phases,
        "--max-examples",
        str(args.max_examples),
        "--workers",
        str(args.workers),
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
    ]
    command += selection
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    if authorization is not None:
        command += ["--header", f"Authorization: {authorization}"]
    return command


def missing_links(links: Counter[str]) -> list[str]:
    return [pattern.pattern for pattern in REQUIRED_LINKS if not any(pattern.search(link) for link in links)]


def unmet(run: ContractRun, evidence: Evidence) -> list[str]:
    """What the main passes have not done yet: links never followed; with an operator, actions that met no transfer."""
    gaps = [
        f"the stateful phase never followed a link matching {pattern!r}" for pattern in missing_links(evidence.links)
    ]
    if run.operator_token is not None:
        gaps += [
            f"{operation} never met a real transfer (no 200, no 409) with the operator's token"
            for operation in sorted(ACTIONS)
            if not evidence.reached(operation)
        ]
    return gaps


def run_config(scratch: str, name: str, *additions: str) -> Path:
    """schemathesis-transfers.toml with ``additions`` appended, for one pass; the committed file when none."""
    if not additions:
        return CONFIG
    config = Path(scratch) / f"schemathesis-transfers-{name}.toml"
    config.write_text(CONFIG.read_text(encoding="utf-8") + "".join(additions), encoding="utf-8")
    return config


def settled_states(url: str, token: str | None, timeout: float = SETTLE_SECONDS) -> Counter[str]:
    """Every transfer's state once none is still running (or the time is up), through the generated client."""
    client = AuthenticatedClient(url, token=token) if token is not None else Client(url)
    deadline = time.monotonic() + timeout
    while True:
        states: Counter[str] = Counter()
        after: str | Unset = UNSET
        while True:
            page = list_transfers.sync(client=client, limit=500, after=after)
            if not isinstance(page, TransferPage):
                raise RuntimeError(f"GET /transfers answered {page!r}")
            states.update(transfer.state.value for transfer in page.transfers)
            if not isinstance(page.next_, str):
                break
            after = page.next_
        running = sum(count for state, count in states.items() if TransferState(state) not in FINAL_STATES)
        if not running or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def run_schemathesis(
    command: list[str],
    scratch: str,
    env: dict[str, str],
    secrets: Sequence[str],
    evidence: Evidence,
    *,
    refusals: bool,
) -> int:
    report = Path(command[command.index("--report-ndjson-path") + 1])
    print(f"    $ {printable(command, secrets)}", flush=True)
    returncode = subprocess.run(command, cwd=scratch, env=env, check=False).returncode
    evidence.add(report, refusals=refusals)
    return returncode


def printable(command: Sequence[str], secrets: Sequence[str]) -> str:
    text = f"SCHEMATHESIS_HOOKS={shlex.quote(str(HOOKS))} {shlex.join(command)}"
    # Longest first: no secret is left half-masked by a shorter one inside it.
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def execute(run: ContractRun, number: int, total: int, args: argparse.Namespace) -> Outcome:
    print(f"\n=== transfers contract run {number}/{total}: {run.name}", flush=True)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)}
    token = run.main_token
    evidence = Evidence()
    returncodes = []
    problems: list[str] = []
    started = time.monotonic()
    # Passes without a token that may act: fewer examples, as little is new there.
    few_args = argparse.Namespace(**{**vars(args), "max_examples": min(args.max_examples, REFUSAL_EXAMPLES)})
    # schemathesis keeps its caches and Hypothesis database in the working
    # directory; a scratch one keeps them out of the repository and makes
    # every run start from nothing.
    with tempfile.TemporaryDirectory(prefix="transfers-contract-run-") as scratch, services(run) as running:
        url = running.transfers.url
        authorization = f"Bearer {token}" if token is not None else None
        additions = (ACTIONS_REFUSED, NO_AUTHORIZATION_NEEDED) if run.operator_token is None else ()
        main = Evidence()
        for attempt in range(1 + STATEFUL_TOP_UPS):
            phases = "examples,coverage,fuzzing,stateful"
            config = run_config(scratch, "main", *additions)
            selection: Sequence[str] = ()
            if attempt:
                # The stateful phase sometimes ends after a few scenarios, or
                # spends them on other links; another stateful pass, same
                # checks, fills the gap: on the contract's links alone while
                # one of them is missing, else on every link, for the actions.
                print(f"    not done yet: {'; '.join(unmet(run, main))}; stateful pass {attempt + 1}")
                phases = "stateful"
                if missing_links(main.links):
                    config = run_config(scratch, "contract-links", *additions, CONTRACT_LINKS_ONLY)
                    selection = CONTRACT_LINKS_SELECTION
            report = Path(scratch) / f"events-{attempt}.ndjson"
            command = schemathesis_command(url, phases, report, authorization, args, config, selection)
            returncodes.append(run_schemathesis(command, scratch, env, run.secrets, main, refusals=False))
            # A failure is reported whatever happens next; the top-ups still
            # run, so that a failing run does not also blame the links.
            if not unmet(run, main):
                break
        problems += unmet(run, main)
        evidence += main
        if run.operator_token is None:
            problems += refusal_problems(main, "with no token at a service without operator tokens")
        if run.api_token is not None and run.operator_token is not None:
            print("    with the caller's token: every action must answer 403 operator_only, and none be taken")
            caller = Evidence()
            report = Path(scratch) / "events-caller.ndjson"
            command = schemathesis_command(
                url,
                "examples,coverage,fuzzing",
                report,
                f"Bearer {run.api_token}",
                few_args,
                run_config(scratch, "caller", ACTIONS_REFUSED),
            )
            returncodes.append(run_schemathesis(command, scratch, env, run.secrets, caller, refusals=False))
            problems += refusal_problems(caller, "with the caller's token")
            if not caller.served():
                problems.append("with the caller's token, no operation but the actions answered 2xx")
            evidence += caller
        states = settled_states(url, token)
        if token is not None:
            # The contract makes the token optional (a service may have none),
            # so schemathesis never leaves it out by itself.
            refusals = Evidence()
            # Every request is refused before it is read, so more examples would find nothing new.
            for label, wrong in (("no token", None), ("a wrong token", f"Bearer not-{token}")):
                print(f"    with {label}: every operation but /healthz and /readyz must answer 401")
                report = Path(scratch) / f"events-{label.replace(' ', '-')}.ndjson"
                command = schemathesis_command(url, "examples,coverage,fuzzing", report, wrong, few_args)
                returncodes.append(run_schemathesis(command, scratch, env, run.secrets, refusals, refusals=True))
            evidence += refusals
            if not refusals.refused():
                problems.append("no request without a valid token was refused with 401 unauthorized")
            for answer in sorted(set(refusals.unrefused)):
                problems.append(f"without a valid token, {answer}")
        logs = running.logs()
    problems += state_problems(states, evidence)
    for name, log in logs.items():
        if "Traceback" in log:
            problems.append(f"the {name} service logged a traceback:\n{log}")
    returncode = next((code for code in returncodes if code), 0)
    return Outcome(run, returncode, time.monotonic() - started, evidence, states, problems)


def refusal_problems(evidence: Evidence, sender: str) -> list[str]:
    """Every action must have been refused 403 operator_only, and none taken or looked up."""
    problems = [f"{sender}, {answer}: only an operator may act" for answer in evidence.actions_taken()]
    problems += [
        f"{sender}, {operation} never answered 403 operator_only"
        for operation in sorted(ACTIONS)
        if not evidence.forbidden(operation)
    ]
    return problems


def state_problems(states: Counter[str], evidence: Evidence) -> list[str]:
    """What the transfers' final states say about the run."""
    problems = []
    if not states[TransferState.COMPLETED.value]:
        problems.append(f"no transfer completed, so no valid transfer moved money: {dict(states)}")
    # The demo accounts services forget nothing, so no transfer should need an
    # operator; one the run's operator resolved needed attention all the same.
    needed = states[TransferState.NEEDS_ATTENTION.value] + states[TransferState.RESOLVED.value]
    if needed:
        resolved = states[TransferState.RESOLVED.value]
        problems.append(f"{needed} transfers needed attention ({resolved} of them RESOLVED by the run's operator)")
    # Only the run's operator cancels, and only with a cancel answered 200 (a replay too: at most that many).
    cancelled, cancels = states[TransferState.CANCELLED.value], evidence.answers[(CANCEL, 200, None)]
    if cancelled > cancels:
        problems.append(f"{cancelled} transfers ended CANCELLED, but only {cancels} cancels were answered 200")
    return problems


def report(outcomes: Sequence[Outcome]) -> None:
    print("\n=== transfers contract runs")
    for number, outcome in enumerate(outcomes, 1):
        verdict = "passed" if outcome.passed else "FAILED"
        exit_status = f"schemathesis exit {outcome.returncode}"
        print(f"{number}. {verdict} in {outcome.seconds:.1f}s ({exit_status}): {outcome.run.name}")
        for link, count in sorted(outcome.evidence.links.items()):
            print(f"     followed {count:4d}x  {link}")
        for operation, answers in outcome.evidence.by_operation().items():
            print(f"     {operation}: {answers}")
        print(f"     transfers by state: {', '.join(f'{state} {n}' for state, n in sorted(outcome.states.items()))}")
        for problem in outcome.problems:
            print(f"     problem: {problem}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=40, help="test cases per operation and phase (40)")
    # One worker: on Python 3.11, Hypothesis describing strategies in several
    # threads at once can trip CPython's "AST constructor recursion depth
    # mismatch" SystemError, which schemathesis reports as a runtime error.
    parser.add_argument("--workers", type=int, default=1, help="concurrent schemathesis workers (1)")
    parser.add_argument("--seed", type=int, default=None, help="schemathesis seed, to repeat a run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    outcomes = [execute(run, number, len(RUNS), args) for number, run in enumerate(RUNS, 1)]
    report(outcomes)
    passed = all(outcome.passed for outcome in outcomes)
    print(f"\ntransfers contract: {'passed' if passed else 'FAILED'} in {time.monotonic() - started:.1f}s")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
