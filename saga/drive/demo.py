"""``python -m saga demo``: two live banks, the transfers service between them, a batch of transfers, and the verdict.

The demo is a caller of the transfers service (``python -m saga serve``),
through the generated transfers client, as any caller would be: each
transfer is POSTed under its own Idempotency-Key and sent again under the
same key whenever no answer came. Both banks keep their ledgers in SQLite
files and the service its saga log. Halfway through the submissions bank B
is killed with SIGKILL, and later the transfers service itself; each is
started again on its own files. The report comes from the API (the states,
one transfer's timeline) and from the banks (the money and the audit
trails), and shows that nothing was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import secrets
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from saga import services, verify
from saga.cli import terminal
from saga.cli.options import (
    MAX_CONCURRENCY,
    add_db_option,
    add_output_options,
    add_plan_options,
    given_db,
    whole_number,
)
from saga.clients import ServiceClients
from saga.drive import batch

if TYPE_CHECKING:
    from saga.service.demo_client import DemoReport
    from server.process import ServerProcess

BANK_A = {"alice": 100_000, "bob": 100_000, "charlie": 100_000}
BANK_B = {"dave": 100_000, "erin": 100_000, "frank": 100_000}
#: How long the demo waits, after the last submission, for every transfer to be final.
FINAL_PATIENCE_SECONDS = 120.0
#: Exit status when anything broke: an invariant, a restart, or the API.
EXIT_BROKEN = 3


def add_demo_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo", help="start two accounts services and the transfers service, and send a batch of transfers through it"
    )
    add_plan_options(demo, transfers=500, shown_transfers=500)
    demo.add_argument(
        "--concurrency", type=whole_number(1, MAX_CONCURRENCY), default=32, help="requests to the API at once (32)"
    )
    demo.add_argument("--credit-fault-rate", type=float, default=0.3)
    add_db_option(demo, otherwise="a temporary file")
    demo.add_argument(
        "--no-restart",
        action="store_true",
        help="do not kill and restart bank B and the transfers service in the middle of the batch",
    )
    add_output_options(demo)


def run_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from saga.service.demo_client import ApiFailure
    from saga.service.process import TransfersProcess
    from server.process import ServerProcess

    # Flushed as they go: piped to one file with the progress on stderr, the lines stay in order.
    def say(*lines: str) -> None:
        if not args.quiet:
            print(*lines, sep="\n", file=out, flush=True)

    say(
        f"starting bank A ({', '.join(BANK_A)}) and bank B ({', '.join(BANK_B)}), each with 100000 per account,",
        f"with {args.credit_fault_rate:.0%} of credits failing on purpose, and the transfers service between them ...",
    )
    crashes: list[Crash] = []
    with tempfile.TemporaryDirectory(prefix="saga-demo-") as scratch:
        folder = Path(scratch)

        def bank(accounts: dict[str, int], name: str) -> ServerProcess:
            return ServerProcess(
                accounts,
                credit_fault_rate=args.credit_fault_rate,
                extra_args=["--database", f"sqlite:///{folder / f'{name}.db'}", "--replica-id", name],
            )

        with bank(BANK_A, "bank-a") as bank_a, bank(BANK_B, "bank-b") as bank_b:
            banks = {"bank-a": bank_a.url, "bank-b": bank_b.url}
            given = given_db(args)
            db = given or folder / "saga.db"
            with TransfersProcess(banks, db=db) as service:
                say(
                    f"bank A at {bank_a.url}, bank B at {bank_b.url}, the transfers service at {service.url}",
                    f"ledgers and saga log in {folder if given is None else f'{folder} and {db}'}",
                )
                if not args.no_restart:
                    crashes = [
                        Crash("bank B", bank_b, 1 / 2, "the same ledger file", _bank_outcome),
                        Crash("the transfers service", service, 4 / 5, "the same saga log", _service_outcome),
                    ]
                try:
                    report = asyncio.run(_run(args, banks, service.url, crashes, err))
                except (ApiFailure, RestartFailed, services.ServiceUnavailable) as error:
                    _join_all(crashes)
                    print(f"error: {error}", file=err)
                    if not isinstance(error, RestartFailed):
                        # A process that did not come back explains an API that never answered.
                        for crash in crashes:
                            if crash.error is not None:
                                print(f"{crash.name} could not be restarted: {crash.error}", file=err)
                        _show_log_tail("the transfers service", service, err)
                    return EXIT_BROKEN
                finally:
                    # Before the processes are stopped: a restart still under way would leave one running.
                    _join_all(crashes)
    return _verdict(args, report, crashes, out)


def _verdict(args: argparse.Namespace, report: DemoReport, crashes: list[Crash], out: TextIO) -> int:
    if not args.quiet:
        print("\nsummary", file=out)
        print(report.render(), file=out)
        example = report.example()
        if example is not None:
            print("\none transfer's timeline, from GET /transfers/{id}/events:", file=out)
            print("\n".join(report.timeline(*example)), file=out)
    print(f"\nmoney conserved: {'yes' if report.money_conserved else 'NO'}", file=out)
    for crash in crashes:
        print(crash.line(report), file=out)
    if report.violations:
        print(f"{len(report.violations)} invariants BROKEN", file=out)
        return EXIT_BROKEN
    print("every invariant holds: the money is exactly where the sagas say it is", file=out)
    return 0


def _show_log_tail(name: str, process: ServerProcess, err: TextIO, lines: int = 20) -> None:
    tail = process.log().splitlines()[-lines:]
    if tail:
        print(f"the last lines of {name}'s log:", *(f"  {line}" for line in tail), sep="\n", file=err)


class RestartFailed(Exception):
    """A process killed on purpose did not start again on its files."""


class Crash:
    """SIGKILLs one process once a share of the transfers is submitted, and starts it again on its files."""

    def __init__(
        self, name: str, process: ServerProcess, share: float, files: str, outcome: Callable[[DemoReport], str]
    ) -> None:
        self.name = name
        self.process = process
        self.share = share
        self.files = files
        #: What the report says of the crash's consequences.
        self.outcome = outcome
        self.after: int | None = None
        self.total = 0
        self.error: str | None = None
        self._thread: threading.Thread | None = None

    def progress(self, submitted: int, total: int) -> None:
        if self._thread is not None or submitted < math.ceil(total * self.share):
            return
        self.after, self.total = submitted, total
        # Killed here, between two answers, so that the requests still to come meet the dead process.
        self.process.kill()
        # Started again in a thread: the restart waits for the new process to
        # answer, and the rest of the batch must keep going meanwhile.
        self._thread = threading.Thread(target=self._restart, name=f"restart-{self.name}")
        self._thread.start()

    def _restart(self) -> None:
        try:
            self.process.restart_after_kill()
        except Exception as error:
            # Whole: a process that would not start says why in the log its error carries.
            self.error = str(error)

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def line(self, report: DemoReport) -> str:
        return (
            f"{self.name} was killed with SIGKILL after {self.after} of {self.total} submissions "
            f"and restarted on {self.files}; {self.outcome(report)}"
        )


def _bank_outcome(report: DemoReport) -> str:
    if report.money_conserved and not report.violations:
        return "it lost nothing: money conserved, every audit trail intact"
    return "it LOST money"


def _service_outcome(report: DemoReport) -> str:
    said = (
        f"{report.posts_again} POSTs were sent again under their keys, "
        f"{report.resumed} sagas resumed by the new process; "
    )
    return said + ("it lost nothing: one transfer per key, each final" if report.keys_hold else "it LOST transfers")


def _join_all(crashes: list[Crash]) -> None:
    for crash in crashes:
        crash.join()


async def _run(
    args: argparse.Namespace, banks: dict[str, str], service_url: str, crashes: list[Crash], err: TextIO
) -> DemoReport:
    from saga.service import demo_client as api_client

    loop = asyncio.get_running_loop()
    names = {url: name for name, url in banks.items()}
    # The banks are read through accounts clients of the demo's own; the transfers service drives the sagas.
    async with (
        ServiceClients() as reader,
        api_client.TransfersApi(service_url, connections=args.concurrency * 2) as api,
    ):
        before = await services.snapshot(reader, banks.values())
        planned = batch.plan(
            batch.Workload(args.transfers, max_amount=500, seed=args.seed), banks["bank-a"], banks["bank-b"], before
        )
        # A new run's keys: a saga log kept from an earlier run (--db) must not answer them as replays.
        run = secrets.token_hex(4)
        sent = api_client.submissions(run, planned, names)
        if not args.quiet:
            print(
                f"POSTing {len(sent)} transfers from bank A to bank B to the transfers service, "
                f"{args.concurrency} at a time, under the keys demo-{run}-1 to demo-{run}-{len(sent)}",
                file=err,
            )
        started = loop.time()
        with terminal.progress(err, show=not args.quiet, what="transfers submitted") as shown:

            def progress(done: int, total: int) -> None:
                if shown is not None:
                    shown(done, total)
                for crash in crashes:
                    crash.progress(done, total)

            await api_client.each(sent, args.concurrency, api.submit, progress)
        await asyncio.to_thread(_join_all, crashes)
        for crash in crashes:
            if crash.error is not None:
                raise RestartFailed(f"{crash.name} could not be restarted: {crash.error}")

        give_up = loop.time() + FINAL_PATIENCE_SECONDS
        ids = [str(submission.transaction_id) for submission in sent]
        with terminal.progress(err, show=not args.quiet, what="transfers final") as shown:
            finals = await api_client.each(ids, args.concurrency, lambda tid: api.final(tid, give_up), shown)
        seconds = loop.time() - started
        listed = await api.listing(f"demo-{run}-")
        timelines = dict(zip(ids, await api_client.each(ids, args.concurrency, api.events), strict=True))

        after = await services.snapshot(reader, banks.values())
        opened = services.opened_between(before, after)
        ends = api_client.saga_ends(finals, banks)
        trails = await services.trails(reader, ends)
    violations = api_client.answer_violations(sent, finals, listed) + verify.check(
        before, after, ends, trails, opened=opened
    )
    return api_client.DemoReport(sent, finals, listed, timelines, banks, before, after, seconds, violations)
