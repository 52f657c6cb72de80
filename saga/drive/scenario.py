"""Scenario files: services, workload, faults, retry policy and expected outcome, run with ``batch SCENARIO.json``.

A scenario starts its own accounts services on loopback, runs its workload
through the saga (optionally killing the orchestrator process mid-run and
recovering), then checks the invariants and the scenario's expectations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from saga import services, verify
from saga.cli import terminal
from saga.cli.options import given_db
from saga.clients import ServiceClients
from saga.drive import batch
from saga.logs import SagaLogError, SqliteSagaLog, count_sagas
from saga.orchestrator import Orchestrator
from saga.retry import RetryPolicies, RetryPolicy
from saga.run import TransferResult
from saga.states import SagaState
from server.shared.database_url import DatabaseUrlError, parse_database_url


class ScenarioError(ValueError):
    """The scenario file is missing, unreadable or malformed."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    accounts: dict[str, int]
    credit_fault_rate: float = 0.3
    credit_fault_after_commit_rate: float = 0.0
    fault_seed: int | None = None
    token: str | None = None


@dataclass(frozen=True)
class Expectations:
    invariants: bool = True
    min_completed_ratio: float = 0.0
    min_compensated: int = 0
    codes_seen: tuple[str, ...] = ()
    min_recovered: int = 0


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    services: tuple[ServiceSpec, ...]
    source_service: str
    target_service: str
    workload: batch.Workload
    concurrency: int
    max_credit_attempts: int = 3
    request_timeout: float = 5.0
    crash_after_sagas: int | None = None
    expect: Expectations = field(default_factory=Expectations)

    @property
    def token(self) -> str | None:
        tokens = {spec.token for spec in self.services}
        if len(tokens) > 1:
            raise ScenarioError("all services of a scenario share one token, or none")
        return next(iter(tokens))

    def policies(self) -> RetryPolicies:
        defaults = RetryPolicies()
        return RetryPolicies(
            debit=RetryPolicy(maximum_attempts=5, request_timeout=self.request_timeout),
            credit=RetryPolicy(maximum_attempts=self.max_credit_attempts, request_timeout=self.request_timeout),
            compensation=RetryPolicy(
                maximum_attempts=None,
                maximum_interval=defaults.compensation.maximum_interval,
                request_timeout=self.request_timeout,
            ),
        )


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise ScenarioError(f"{where}: {key!r} is required")
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ScenarioError(f"{where}: {key!r} has the wrong type")
    return value


def load(path: Path) -> Scenario:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ScenarioError(f"cannot read scenario {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise ScenarioError(f"scenario {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario {path} must be a JSON object")
    where = path.name
    specs = []
    for index, service in enumerate(_require(data, "services", list, where)):
        service_where = f"{where} services[{index}]"
        accounts = _require(service, "accounts", dict, service_where)
        if not all(type(balance) is int for balance in accounts.values()):
            raise ScenarioError(f"{service_where}: balances must be integers (minor units)")
        faults = service.get("faults", {})
        specs.append(
            ServiceSpec(
                name=_require(service, "name", str, service_where),
                accounts=accounts,
                credit_fault_rate=float(faults.get("credit_fault_rate", 0.3)),
                credit_fault_after_commit_rate=float(faults.get("credit_fault_after_commit_rate", 0.0)),
                fault_seed=faults.get("fault_seed"),
                token=service.get("token"),
            )
        )
    names = [spec.name for spec in specs]
    if not specs or len(set(names)) != len(names):
        raise ScenarioError(f"{where}: services need distinct names, and at least one")
    workload = _require(data, "workload", dict, where)
    source = workload.get("source_service", names[0])
    target = workload.get("target_service", source)
    for role, name in (("source_service", source), ("target_service", target)):
        if name not in names:
            raise ScenarioError(f"{where}: workload {role} {name!r} is not one of {names}")
    policy = data.get("retry_policy", {})
    crash = data.get("crash")
    expect = data.get("expect", {})
    try:
        return Scenario(
            name=data.get("name", path.stem),
            description=data.get("description", ""),
            services=tuple(specs),
            source_service=source,
            target_service=target,
            workload=batch.Workload(
                transfers=_require(workload, "transfers", int, f"{where} workload"),
                min_amount=workload.get("min_amount", 1),
                max_amount=workload.get("max_amount", 1_000),
                seed=workload.get("seed"),
                sources=workload.get("sources"),
                targets=workload.get("targets"),
            ),
            concurrency=workload.get("concurrency", 16),
            max_credit_attempts=policy.get("max_credit_attempts", 3),
            request_timeout=float(policy.get("request_timeout", 5.0)),
            crash_after_sagas=None if crash is None else int(crash["kill_after_sagas"]),
            expect=Expectations(
                invariants=expect.get("invariants", True),
                min_completed_ratio=float(expect.get("min_completed_ratio", 0.0)),
                min_compensated=int(expect.get("min_compensated", 0)),
                codes_seen=tuple(expect.get("codes_seen", ())),
                min_recovered=int(expect.get("min_recovered", 0)),
            ),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise ScenarioError(f"{where}: {error}") from None


#: A correct saga may fail a scenario's expectations by the luck of the fault
#: draws alone at most this often (see :func:`chance_of_false_alarm`).
FALSE_ALARM_BOUND = 1e-6


def chance_of_false_alarm(scenario: Scenario) -> float:
    """How likely a correct saga is to fail the scenario's expectations through the fault draws alone.

    A credit attempt fails before it applies with its service's
    ``credit_fault_rate`` b. One that applies answers 500 all the same with
    the ``credit_fault_after_commit_rate`` a, and every later attempt is then
    a replay, answered ``applied`` whatever the draw. So all k attempts of a
    credit fail, and the saga compensates instead of completing, with
    p = b^(k-1) * (b + (1-b) * a). Each of the n transfers is taken as an
    independent draw (the fault generator is seeded, but concurrent sagas
    take its draws in whatever order they arrive), and its debit as covered
    (the scenarios that expect these counts fund their accounts for the
    whole workload). Then, summing over the expectations:

    - ``min_completed_ratio`` r breaks when more than n - ceil(r * n)
      compensate: the upper tail of Binomial(n, p);
    - ``min_compensated`` m breaks when fewer than m compensate: its lower tail;
    - ``"injected_fault"`` in ``codes_seen`` breaks when none of the n first
      credit attempts draws a fault: at most (1 - b)^n.

    Expectations that no draw decides (invariants, a code the amounts alone
    produce, recovery after a kill) add nothing. Timing decides nothing
    either: a scenario's request timeout is far above any answer's time.
    """
    target = next(spec for spec in scenario.services if spec.name == scenario.target_service)
    n = scenario.workload.transfers
    before, after = target.credit_fault_rate, target.credit_fault_after_commit_rate
    p = before ** (scenario.max_credit_attempts - 1) * (before + (1 - before) * after)

    def compensated(k: int) -> float:
        return math.comb(n, k) * p**k * (1 - p) ** (n - k)

    chance = 0.0
    allowed = n - math.ceil(scenario.expect.min_completed_ratio * n)
    chance += sum(compensated(k) for k in range(allowed + 1, n + 1))
    chance += sum(compensated(k) for k in range(min(scenario.expect.min_compensated, n + 1)))
    if "injected_fault" in scenario.expect.codes_seen:
        chance += (1 - before) ** n
    return chance


@dataclass
class ScenarioOutcome:
    scenario: Scenario
    report: batch.BatchReport
    failed_expectations: list[str]

    @property
    def passed(self) -> bool:
        return not self.failed_expectations

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "passed": self.passed,
            "failed_expectations": self.failed_expectations,
            **self.report.to_json(),
        }


@contextmanager
def running_services(scenario: Scenario) -> Iterator[dict[str, str]]:
    from server.process import ServerProcess

    with ExitStack() as stack:
        urls = {}
        for spec in scenario.services:
            process = ServerProcess(
                spec.accounts,
                credit_fault_rate=spec.credit_fault_rate,
                credit_fault_after_commit_rate=spec.credit_fault_after_commit_rate,
                fault_seed=spec.fault_seed,
                token=spec.token,
            )
            urls[spec.name] = stack.enter_context(process).url
        yield urls


def check_expectations(scenario: Scenario, report: batch.BatchReport) -> list[str]:
    expect = scenario.expect
    failed = []
    if expect.invariants and report.violations:
        failed += [f"invariant broken: {violation}" for violation in report.violations]
    total = len(report.results)
    completed = report.states[SagaState.COMPLETED]
    if total and completed / total < expect.min_completed_ratio:
        failed.append(f"completed {completed}/{total} = {completed / total:.1%} < {expect.min_completed_ratio:.0%}")
    if report.states[SagaState.COMPENSATED] < expect.min_compensated:
        failed.append(f"compensated {report.states[SagaState.COMPENSATED]} < {expect.min_compensated}")
    codes = Counter(attempt.code for result in report.results for attempt in result.attempts if attempt.code)
    for code in expect.codes_seen:
        if not codes[code]:
            failed.append(f"no answer with code {code!r} was seen")
    if len(report.recovered) < expect.min_recovered:
        failed.append(f"recovered {len(report.recovered)} sagas < {expect.min_recovered}")
    return failed


async def _run_in_process(
    scenario: Scenario, urls: dict[str, str], db: Path, progress: batch.Progress | None
) -> batch.BatchReport:
    source_url, target_url = urls[scenario.source_service], urls[scenario.target_service]
    log = await SqliteSagaLog.open(db)
    try:
        async with Orchestrator(
            log, policies=scenario.policies(), token=scenario.token, concurrency=scenario.concurrency
        ) as orchestrator:
            before = await services.snapshot(orchestrator.clients, urls.values(), orchestrator.watch)
            planned = batch.plan(scenario.workload, source_url, target_url, before)
            return await batch.run(orchestrator, planned, list(urls.values()), progress=progress, before=before)
    finally:
        await log.close()


def _saga_rows(db: Path) -> int:
    try:
        return count_sagas(db)
    except SagaLogError:
        # The child has created the file but not the schema yet.
        return 0


async def _snapshot(scenario: Scenario, urls: dict[str, str]) -> dict[str, dict[str, int]]:
    async with ServiceClients(token=scenario.token) as reader:
        return await services.snapshot(reader, urls.values())


def _run_child_and_kill(scenario: Scenario, urls: dict[str, str], db: Path) -> None:
    """Run the batch in a child orchestrator and SIGKILL it once enough sagas are logged."""
    assert scenario.crash_after_sagas is not None
    command = [
        sys.executable, "-m", "saga", "batch",
        "--source-url", urls[scenario.source_service], "--target-url", urls[scenario.target_service],
        "--transfers", str(scenario.workload.transfers), "--concurrency", str(scenario.concurrency),
        "--max-amount", str(scenario.workload.max_amount),
        "--max-credit-attempts", str(scenario.max_credit_attempts),
        "--db", str(db), "--no-audit",
    ]  # fmt: skip
    if scenario.workload.seed is not None:
        command += ["--seed", str(scenario.workload.seed)]
    env = dict(os.environ)
    if scenario.token:
        env["SAGA_TOKEN"] = scenario.token
    child = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    try:
        deadline = time.monotonic() + 120
        while _saga_rows(db) < scenario.crash_after_sagas and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()


async def _recover_and_judge(
    scenario: Scenario, urls: dict[str, str], db: Path, before: dict[str, dict[str, int]]
) -> batch.BatchReport:
    log = await SqliteSagaLog.open(db, create=False)
    try:
        async with Orchestrator(log, policies=scenario.policies(), token=scenario.token) as orchestrator:
            loop = asyncio.get_running_loop()
            started = loop.time()
            recovered = await orchestrator.recover()
            seconds = loop.time() - started
            records = await log.sagas()
            after = await services.snapshot(orchestrator.clients, urls.values(), orchestrator.watch)
            opened = services.opened_between(before, after)
            ends = [verify.SagaEnd.of(r) for r in records]
            trails = await services.trails(orchestrator.clients, ends)
    finally:
        await log.close()
    by_id = {result.transaction_id: result for result in recovered}
    results = [
        by_id.get(r.transaction_id)
        or TransferResult(r.transaction_id, r.state, r.source, r.target, r.amount, (), r.last_error)
        for r in records
    ]
    violations = verify.check(before, after, ends, trails, opened=opened)
    return batch.BatchReport(results, before, after, seconds, violations, recovered=recovered, audited=True)


def run(scenario: Scenario, db: Path, progress: batch.Progress | None = None) -> ScenarioOutcome:
    with running_services(scenario) as urls:
        if scenario.crash_after_sagas is None:
            report = asyncio.run(_run_in_process(scenario, urls, db, progress))
        else:
            before = asyncio.run(_snapshot(scenario, urls))
            _run_child_and_kill(scenario, urls, db)
            report = asyncio.run(_recover_and_judge(scenario, urls, db, before))
    return ScenarioOutcome(scenario, report, check_expectations(scenario, report))


def override(scenario: Scenario, args: argparse.Namespace) -> Scenario:
    workload = scenario.workload
    changes: dict[str, Any] = {}
    if args.transfers is not None or args.seed is not None or args.max_amount is not None:
        changes["workload"] = batch.Workload(
            transfers=args.transfers if args.transfers is not None else workload.transfers,
            min_amount=workload.min_amount,
            max_amount=args.max_amount if args.max_amount is not None else workload.max_amount,
            seed=args.seed if args.seed is not None else workload.seed,
            sources=workload.sources,
            targets=workload.targets,
        )
    if args.concurrency is not None:
        changes["concurrency"] = args.concurrency
    if args.max_credit_attempts is not None:
        changes["max_credit_attempts"] = args.max_credit_attempts
    if not changes:
        return scenario
    from dataclasses import replace

    return replace(scenario, **changes)


def scenario_log(args: argparse.Namespace) -> Path | None:
    """The SQLite file --db or SAGA_DB names for the scenario's sagas; None for a scratch one."""
    given = given_db(args)
    if given is None:
        return None
    try:
        parsed = parse_database_url(given)
    except DatabaseUrlError as error:
        raise ScenarioError(str(error)) from None
    if parsed.path is None:
        raise ScenarioError(f"a scenario keeps its sagas in a SQLite file, and --db or SAGA_DB names {parsed.kind}")
    return parsed.path


def run_scenario_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    scenario = override(load(args.scenario), args)
    print(f"scenario {scenario.name}: {scenario.description}", file=err)
    with tempfile.TemporaryDirectory(prefix="saga-scenario-") as scratch:
        db = scenario_log(args) or Path(scratch) / "saga.db"
        show_progress = not args.quiet and (args.progress or (err.isatty() and not args.json))
        with terminal.progress(err, show=show_progress) as progress:
            outcome = run(scenario, db, progress)
    if not args.quiet:
        print(outcome.report.render(), file=err if args.json else out)
    for failure in outcome.failed_expectations:
        print(f"  ! expectation failed: {failure}", file=err if args.json else out)
    print(f"scenario {scenario.name}: {'PASSED' if outcome.passed else 'FAILED'}", file=err if args.json else out)
    if args.json:
        print(json.dumps(outcome.to_json()), file=out)
    return 0 if outcome.passed else 3
