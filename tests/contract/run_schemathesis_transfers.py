"""Run the schemathesis CLI against a live transfers service: its contract's conformance run.

    .venv/bin/python tests/contract/run_schemathesis_transfers.py [--max-examples N] [--workers N] [--seed N]

Each run starts two accounts services (``python -m server`` with the demo
balances of run_schemathesis.py: bank-a with credit faults off, bank-b with
30% credit faults) and a ``python -m saga serve`` that names them, each on a
free loopback port, and drives the committed openapi/transfers.yaml (not the
app's /openapi.json) with every check (``--checks all``), valid and invalid
data (``--mode all``), and the stateful phase, which follows the contract's
OpenAPI links: createTransfer -> getTransfer -> getTransferEvents.

1. no API tokens: the service serves anyone on loopback.
2. an API token: schemathesis sends ``Authorization: Bearer <token>``; then
   two more passes send no token and a wrong one, and every answer from an
   operation outside /healthz and /readyz must be 401 ``unauthorized``.

The configuration (schemathesis-transfers.toml) draws the services a
transfer names from the ones the service was started with, and lets
``positive_data_acceptance`` take a 422 on /transfers; the custom check in
schemathesis_transfers_hooks.py fails any 422 on valid data but those the
schema cannot rule out (a reused Idempotency-Key, an unknown service, one
account named twice, a cursor the service did not give out).

A run also fails if the required links below were never followed (after up
to two more stateful-only passes), if no transfer it submitted completed (so
valid data reached the accounts services and moved money), if a transfer
needs attention, or if any of the three services logged a traceback. Exits
0 only if both runs pass.
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
from tests.contract.schemathesis_transfers_hooks import CONTRACT_OPERATIONS, SERVICES  # noqa: E402

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
#: Paths anyone may call, whatever tokens the service has: the contract's `security: [{}]` operations.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})

#: Test cases per operation and phase in the passes without a valid token.
REFUSAL_EXAMPLES = 10
#: Extra stateful-only passes allowed when the required links were not all followed.
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
    {TransferState.COMPLETED, TransferState.COMPENSATED, TransferState.FAILED, TransferState.NEEDS_ATTENTION}
)


@dataclass(frozen=True)
class ContractRun:
    name: str
    #: The token the service requires and schemathesis sends; None for a service without API tokens.
    api_token: str | None


RUNS = (
    ContractRun(name="no API tokens: every check on every operation", api_token=None),
    ContractRun(
        name="an API token: every check with it, then 401 without it and with a wrong one", api_token=API_TOKEN
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


def _problem_code(response: dict[str, Any]) -> str | None:
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
        transfers = TransfersProcess({name: server.url for name, server in accounts.items()}, api_tokens=api_tokens)
        stack.enter_context(transfers)
        callers = f"API caller {CALLER!r}" if api_tokens else "no API tokens"
        print(f"    transfers service: {transfers.url}, {callers}", flush=True)
        yield Services(transfers, accounts)


def schemathesis_command(
    url: str, phases: str, report: Path, authorization: str | None, args: argparse.Namespace
) -> list[str]:
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "run",
        str(CONTRACT),
        "--url",
        url,
        "--checks",
        "all",
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
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    if authorization is not None:
        command += ["--header", f"Authorization: {authorization}"]
    return command


def missing_links(links: Counter[str]) -> list[str]:
    return [pattern.pattern for pattern in REQUIRED_LINKS if not any(pattern.search(link) for link in links)]


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
    command: list[str], scratch: str, env: dict[str, str], token: str | None, evidence: Evidence, *, refusals: bool
) -> int:
    report = Path(command[command.index("--report-ndjson-path") + 1])
    print(f"    $ {printable(command, token)}", flush=True)
    returncode = subprocess.run(command, cwd=scratch, env=env, check=False).returncode
    evidence.add(report, refusals=refusals)
    return returncode


def printable(command: Sequence[str], token: str | None) -> str:
    text = f"SCHEMATHESIS_HOOKS={shlex.quote(str(HOOKS))} {shlex.join(command)}"
    return text.replace(token, "***") if token else text


def execute(run: ContractRun, number: int, total: int, args: argparse.Namespace) -> Outcome:
    print(f"\n=== transfers contract run {number}/{total}: {run.name}", flush=True)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)}
    token = run.api_token
    evidence = Evidence()
    returncodes = []
    problems: list[str] = []
    started = time.monotonic()
    # schemathesis keeps its caches and Hypothesis database in the working
    # directory; a scratch one keeps them out of the repository and makes
    # every run start from nothing.
    with tempfile.TemporaryDirectory(prefix="transfers-contract-run-") as scratch, services(run) as running:
        url = running.transfers.url
        authorization = f"Bearer {token}" if token is not None else None
        phases = "examples,coverage,fuzzing,stateful"
        for attempt in range(1 + STATEFUL_TOP_UPS):
            if attempt:
                # The stateful phase sometimes ends after a few scenarios, or
                # spends them on the links schemathesis infers; another
                # stateful pass, same checks, fills the gap.
                phases = "stateful"
                missing = ", ".join(missing_links(evidence.links))
                print(f"    links not followed yet: {missing}; stateful pass {attempt + 1}")
            report = Path(scratch) / f"events-{attempt}.ndjson"
            command = schemathesis_command(url, phases, report, authorization, args)
            returncodes.append(run_schemathesis(command, scratch, env, token, evidence, refusals=False))
            if any(returncodes) or not missing_links(evidence.links):
                break
        states = settled_states(url, token)
        if token is not None:
            # The contract makes the token optional (a service may have none),
            # so schemathesis never leaves it out by itself.
            refusals = Evidence()
            # Every request is refused before it is read, so more examples would find nothing new.
            refusal_args = argparse.Namespace(
                **{**vars(args), "max_examples": min(args.max_examples, REFUSAL_EXAMPLES)}
            )
            for label, wrong in (("no token", None), ("a wrong token", f"Bearer not-{token}")):
                print(f"    with {label}: every operation but /healthz and /readyz must answer 401")
                report = Path(scratch) / f"events-{label.replace(' ', '-')}.ndjson"
                command = schemathesis_command(url, "examples,coverage,fuzzing", report, wrong, refusal_args)
                returncodes.append(run_schemathesis(command, scratch, env, token, refusals, refusals=True))
            evidence.answers += refusals.answers
            evidence.unrefused += refusals.unrefused
            if not refusals.refused():
                problems.append("no request without a valid token was refused with 401 unauthorized")
            for answer in sorted(set(refusals.unrefused)):
                problems.append(f"without a valid token, {answer}")
        logs = running.logs()
    problems += [
        f"the stateful phase never followed a link matching {pattern!r}" for pattern in missing_links(evidence.links)
    ]
    if not states[TransferState.COMPLETED.value]:
        problems.append(f"no transfer completed, so no valid transfer moved money: {dict(states)}")
    if states[TransferState.NEEDS_ATTENTION.value]:
        problems.append(f"{states[TransferState.NEEDS_ATTENTION.value]} transfers need attention")
    for name, log in logs.items():
        if "Traceback" in log:
            problems.append(f"the {name} service logged a traceback:\n{log}")
    returncode = next((code for code in returncodes if code), 0)
    return Outcome(run, returncode, time.monotonic() - started, evidence, states, problems)


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
