"""Run the schemathesis CLI against live accounts services: the contract's conformance run.

    .venv/bin/python tests/contract/run_schemathesis.py [--max-examples N] [--workers N] [--seed N] [--token T]
    .venv/bin/python tests/contract/run_schemathesis.py --url URL [--token T]
    .venv/bin/python tests/contract/run_schemathesis.py --database postgresql://... [--faults-off-only]

Two runs, each against its own ``python -m server`` on a free loopback port,
driven by the committed openapi/openapi.yaml (not the app's /openapi.json):

1. credit faults off: ``--checks all`` on every operation; any failure fails.
2. the default 30% credit faults: every check, except that ``not_a_server_error``
   is off for POST /credit alone (schemathesis-credit-faults.toml), and the
   custom check in schemathesis_hooks.py fails any 5xx but /credit's 500
   ``injected_fault``.

In both, ``positive_data_acceptance`` takes a 422 on the ledger operations,
since a generated transaction_id often repeats with another body
(``idempotency_key_reused``), and the custom check
``valid_data_is_never_called_invalid`` fails any other 422 on valid data.

Both generate valid and invalid data (``--mode all``: headers, transaction ids
and bodies) and end with the stateful phase, which follows the contract's
OpenAPI links (debit -> compensateDebit under the same transaction_id, and the
others). A run also fails if the links below were never followed (after up
to two more stateful-only passes), or if the server logged a traceback. Exits
0 only if both runs pass.

With ``--url``, one run against a service that is already running (a
deployed one, say): its fault rate is unknown, so it gets
the second run's configuration. ``--database`` starts the local services on
that database (a PostgreSQL URL, say) instead of memory; ``--faults-off-only``
keeps the first run alone. ``--token`` sends a bearer token, and starts
the local services with it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    # Run as a script, Python puts tests/contract on the path, not the repo root.
    sys.path.insert(0, str(ROOT))

from server.ledger import MAX_BALANCE  # noqa: E402
from server.process import ServerProcess  # noqa: E402
from server.shared.database_url import parse_database_url  # noqa: E402

HERE = Path(__file__).resolve().parent
CONTRACT = ROOT / "openapi" / "openapi.yaml"
HOOKS = HERE / "schemathesis_hooks.py"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
FAULTS_CONFIG = HERE / "schemathesis-credit-faults.toml"

#: A rich account, so generated debits apply and their links are followed; the
#: demo balance; and a balance at the limit, so credits meet balance_limit_exceeded.
ACCOUNTS = {"alice": 10**15, "bob": 100_000, "charlie": MAX_BALANCE}

#: Extra stateful-only passes allowed when the required links were not all followed.
STATEFUL_TOP_UPS = 2

DEBIT_COMPENSATED = re.compile(r"^POST /debit -> \[200\] CompensateThisDebit -> POST /compensate_debit$")
CREDIT_FAULT_FOLLOWED = re.compile(r"^POST /credit -> \[500\] \w+ -> ")


@dataclass(frozen=True)
class ContractRun:
    name: str
    #: The fault rate of the service this run starts; None for one already running.
    credit_fault_rate: float | None
    config: Path
    options: tuple[str, ...]
    #: Patterns of stateful transitions the run must have followed at least once.
    required_links: tuple[re.Pattern[str], ...]


RUNS = (
    ContractRun(
        name="credit faults off: every check on every operation",
        credit_fault_rate=0.0,
        config=HERE / "schemathesis.toml",
        options=("--checks", "all"),
        required_links=(DEBIT_COMPENSATED,),
    ),
    ContractRun(
        name="30% credit faults: every check, but not_a_server_error off for POST /credit",
        credit_fault_rate=0.3,
        config=FAULTS_CONFIG,
        # No --checks here: a check named on the command line would override
        # the config file's per-operation setting and turn not_a_server_error
        # back on for /credit.
        options=(),
        required_links=(DEBIT_COMPENSATED, CREDIT_FAULT_FOLLOWED),
    ),
)


def runs_against(url: str) -> tuple[ContractRun, ...]:
    return (
        ContractRun(
            name=f"the service at {url}: every check, but not_a_server_error off for POST /credit",
            credit_fault_rate=None,
            config=FAULTS_CONFIG,
            options=(),
            # Whether its credits fault at all is not known here.
            required_links=(DEBIT_COMPENSATED,),
        ),
    )


@dataclass
class Outcome:
    run: ContractRun
    returncode: int
    seconds: float
    links: Counter[str]
    problems: list[str]

    @property
    def passed(self) -> bool:
        return self.returncode == 0 and not self.problems


def schemathesis_command(
    run: ContractRun, url: str, phases: str, report: Path, args: argparse.Namespace, bearer: str | None
) -> list[str]:
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(run.config),
        "run",
        str(CONTRACT),
        "--url",
        url,
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
        *run.options,
    ]
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    if bearer is not None:
        command += ["--header", f"Authorization: Bearer {bearer}"]
    return command


def printable(command: Sequence[str], token: str | None) -> str:
    text = f"SCHEMATHESIS_HOOKS={shlex.quote(str(HOOKS))} {shlex.join(command)}"
    return text.replace(token, "***") if token else text


@contextmanager
def service(run: ContractRun, args: argparse.Namespace) -> Iterator[tuple[str, Callable[[], str], str | None]]:
    """The service's URL, a way to read its log once the run is over, and the bearer token to send."""
    if run.credit_fault_rate is None:
        print(f"    service: {args.url}, already running")
        yield args.url, lambda: "", args.token
        return
    accounts = ", ".join(f"{user}={balance}" for user, balance in ACCOUNTS.items())
    print(f"    service: python -m server, credit_fault_rate={run.credit_fault_rate}, accounts {accounts}")
    extra_args = ["--database", args.database] if args.database else []
    operator_secret = secrets.token_urlsafe(24)
    if args.database:
        print(f"    database: {parse_database_url(args.database)}")
    with ServerProcess(
        ACCOUNTS,
        credit_fault_rate=run.credit_fault_rate,
        token=args.token,
        extra_args=[*extra_args, "--operator-token", f"contract={operator_secret}"],
    ) as server:
        # An operator's token is accepted wherever the service's is, and
        # drives POST /accounts past 401 and 403 to the openings themselves.
        yield server.url, server.log, operator_secret


def followed_links(report: Path) -> Counter[str]:
    """How often the stateful phase followed each link, from schemathesis's NDJSON event log."""
    links: Counter[str] = Counter()
    if not report.exists():
        return links
    for line in report.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        scenario = event.get("ScenarioFinished")
        if scenario is None:
            continue
        # A scenario that ended in a runtime error records no cases; the error itself fails the run.
        for case in scenario.get("recorder", {}).get("cases", {}).values():
            transition = case.get("transition")
            if transition:
                links[transition["id"]] += 1
    return links


def missing_links(run: ContractRun, links: Counter[str]) -> list[str]:
    return [pattern.pattern for pattern in run.required_links if not any(pattern.search(link) for link in links)]


def execute(run: ContractRun, number: int, total: int, args: argparse.Namespace) -> Outcome:
    print(f"\n=== contract run {number}/{total}: {run.name}", flush=True)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)}
    returncodes = []
    links: Counter[str] = Counter()
    started = time.monotonic()
    # schemathesis keeps its caches and Hypothesis database in the working
    # directory; a scratch one keeps them out of the repository and makes
    # every run start from nothing.
    with (
        tempfile.TemporaryDirectory(prefix="contract-run-") as scratch,
        service(run, args) as (url, read_log, bearer),
    ):
        phases = "examples,coverage,fuzzing,stateful"
        for attempt in range(1 + STATEFUL_TOP_UPS):
            if attempt:
                # The stateful phase sometimes ends after a few scenarios, when
                # Hypothesis cannot replay one against a server whose state has
                # moved on. Another stateful pass, same checks, fills the gap.
                phases = "stateful"
                print(
                    f"    links not followed yet: {', '.join(missing_links(run, links))}; stateful pass {attempt + 1}"
                )
            report = Path(scratch) / f"events-{attempt}.ndjson"
            command = schemathesis_command(run, url, phases, report, args, bearer)
            print(f"    $ {printable(command, bearer)}", flush=True)
            returncodes.append(subprocess.run(command, cwd=scratch, env=env, check=False).returncode)
            links += followed_links(report)
            if any(returncodes) or not missing_links(run, links):
                break
        log = read_log()
    problems = [
        f"the stateful phase never followed a link matching {pattern!r}" for pattern in missing_links(run, links)
    ]
    if "Traceback" in log:
        problems.append(f"the server logged a traceback:\n{log}")
    returncode = next((code for code in returncodes if code), 0)
    return Outcome(run, returncode, time.monotonic() - started, links, problems)


def report(outcomes: Sequence[Outcome]) -> None:
    print("\n=== contract runs")
    for number, outcome in enumerate(outcomes, 1):
        verdict = "passed" if outcome.passed else "FAILED"
        exit_status = f"schemathesis exit {outcome.returncode}"
        print(f"{number}. {verdict} in {outcome.seconds:.1f}s ({exit_status}): {outcome.run.name}")
        for link, count in sorted(outcome.links.items()):
            print(f"     followed {count:4d}x  {link}")
        for problem in outcome.problems:
            print(f"     problem: {problem}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=40, help="test cases per operation and phase (40)")
    # One worker: Hypothesis describes a filter by parsing its source with
    # ast.parse, which CPython before 3.11.8 cannot run in two threads at once
    # ("SystemError: AST constructor recursion depth mismatch").
    parser.add_argument("--workers", type=int, default=1, help="concurrent schemathesis workers (1)")
    parser.add_argument("--seed", type=int, default=None, help="schemathesis seed, to repeat a run")
    parser.add_argument("--url", default=None, help="test this running service instead of starting two")
    parser.add_argument("--token", default=None, help="bearer token to send (and to start local services with)")
    parser.add_argument(
        "--database", default=None, help="start the local services on this database URL (default: memory)"
    )
    parser.add_argument("--faults-off-only", action="store_true", help="only the first run: credit faults off")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    runs = RUNS if args.url is None else runs_against(args.url)
    if args.faults_off_only:
        runs = RUNS[:1]
    outcomes = [execute(run, number, len(runs), args) for number, run in enumerate(runs, 1)]
    report(outcomes)
    passed = all(outcome.passed for outcome in outcomes)
    print(f"\ncontract: {'passed' if passed else 'FAILED'} in {time.monotonic() - started:.1f}s")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
