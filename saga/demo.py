"""``python -m saga demo``: two live accounts services, a batch of transfers through the saga, and the verdict.

Both banks keep their ledgers in SQLite files. Halfway through the batch,
bank B is killed with SIGKILL and started again on the same file: the report
then shows that it lost nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from saga import batch, console, services
from saga.log import SqliteSagaLog
from saga.options import MAX_CONCURRENCY, MAX_SEED, MAX_TRANSFERS, add_output_options, whole_number
from saga.orchestrator import Orchestrator

if TYPE_CHECKING:
    from server.process import ServerProcess

BANK_A = {"alice": 100_000, "bob": 100_000, "charlie": 100_000}
BANK_B = {"dave": 100_000, "erin": 100_000, "frank": 100_000}


def add_demo_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo", help="start two accounts services and run a batch of transfers between them")
    demo.add_argument("--transfers", type=whole_number(1, MAX_TRANSFERS), default=500)
    demo.add_argument("--concurrency", type=whole_number(1, MAX_CONCURRENCY), default=32)
    demo.add_argument("--seed", type=whole_number(-MAX_SEED, MAX_SEED), default=None)
    demo.add_argument("--credit-fault-rate", type=float, default=0.3)
    demo.add_argument("--db", type=Path, default=None, help="keep the saga log here (default: a temporary file)")
    demo.add_argument(
        "--no-restart", action="store_true", help="do not kill and restart bank B in the middle of the batch"
    )
    add_output_options(demo)


def run_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from server.process import ServerProcess

    # Flushed as they go: piped to one file with the progress on stderr, the lines stay in order.
    def say(*lines: str) -> None:
        if not args.quiet:
            print(*lines, sep="\n", file=out, flush=True)

    say(
        f"starting bank A ({', '.join(BANK_A)}) and bank B ({', '.join(BANK_B)}), each with 100000 per account,",
        f"with {args.credit_fault_rate:.0%} of credits failing on purpose ...",
    )
    with tempfile.TemporaryDirectory(prefix="saga-demo-") as scratch:
        ledgers = Path(scratch)

        def bank(accounts: dict[str, int], name: str) -> ServerProcess:
            return ServerProcess(
                accounts,
                credit_fault_rate=args.credit_fault_rate,
                extra_args=["--database", f"sqlite:///{ledgers / f'{name}.db'}", "--replica-id", name],
            )

        with bank(BANK_A, "bank-a") as bank_a, bank(BANK_B, "bank-b") as bank_b:
            db = args.db or ledgers / "saga.db"
            say(f"bank A at {bank_a.url}, bank B at {bank_b.url}, ledgers and saga log in {ledgers}")
            restart = None if args.no_restart else BankRestart(bank_b)
            report = asyncio.run(_run(args, bank_a.url, bank_b.url, db, err, restart))
    if not args.quiet:
        print("\nsummary", file=out)
        print(report.render(), file=out)
    print(f"\nmoney conserved: {'yes' if report.money_conserved else 'NO'}", file=out)
    if restart is not None:
        if restart.error is not None:
            print(f"bank B could not be restarted: {restart.error}", file=out)
            return 3
        lost_nothing = report.money_conserved and not report.violations and report.audited
        print(
            f"bank B was killed with SIGKILL after {restart.after} of {len(report.results)} transfers and "
            f"restarted on the same ledger file; "
            + ("it lost nothing: money conserved, every audit trail intact" if lost_nothing else "it LOST money"),
            file=out,
        )
    if report.violations:
        print(f"{len(report.violations)} invariants BROKEN", file=out)
        return 3
    print("every invariant holds: the money is exactly where the sagas say it is", file=out)
    return 0


class BankRestart:
    """Kills a bank with SIGKILL once half the transfers are done, and starts it again on the same ledger."""

    def __init__(self, bank: ServerProcess) -> None:
        self.bank = bank
        self.after: int | None = None
        self.error: str | None = None
        self._thread: threading.Thread | None = None

    def progress(self, done: int, total: int) -> None:
        if self._thread is None and done * 2 >= total:
            self.after = done
            # In a thread: the restart waits for the new process to answer, and
            # the sagas on the event loop must keep running meanwhile.
            self._thread = threading.Thread(target=self._restart, name="bank-b-restart")
            self._thread.start()

    def _restart(self) -> None:
        try:
            self.bank.restart_after_kill()
        except Exception as error:
            self.error = str(error).splitlines()[0]

    async def finished(self) -> None:
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)


async def _run(
    args: argparse.Namespace, source_url: str, target_url: str, db: Path, err: TextIO, restart: BankRestart | None
) -> batch.BatchReport:
    log = await SqliteSagaLog.open(db)
    try:
        async with Orchestrator(log, concurrency=args.concurrency) as orchestrator:
            before = await services.snapshot(orchestrator, [source_url, target_url])
            planned = batch.plan(
                batch.Workload(args.transfers, max_amount=500, seed=args.seed), source_url, target_url, before
            )
            if not args.quiet:
                print(f"running {len(planned)} transfers from bank A to bank B, {args.concurrency} at a time", file=err)
            with console.progress(err, show=not args.quiet) as shown:

                def progress(done: int, total: int) -> None:
                    if shown is not None:
                        shown(done, total)
                    if restart is not None:
                        restart.progress(done, total)

                return await batch.run(
                    orchestrator,
                    planned,
                    [source_url, target_url],
                    progress=progress,
                    before=before,
                    settle=restart.finished if restart is not None else None,
                )
    finally:
        await log.close()
