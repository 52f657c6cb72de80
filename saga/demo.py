"""``python -m saga demo``: two live accounts services, a batch of transfers through the saga, and the verdict."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import TextIO

from saga import batch, services
from saga.log import SqliteSagaLog
from saga.orchestrator import Orchestrator

BANK_A = {"alice": 100_000, "bob": 100_000, "charlie": 100_000}
BANK_B = {"dave": 100_000, "erin": 100_000, "frank": 100_000}


def add_demo_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from saga.cli import MAX_CONCURRENCY, MAX_SEED, MAX_TRANSFERS, whole_number

    demo = commands.add_parser("demo", help="start two accounts services and run a batch of transfers between them")
    demo.add_argument("--transfers", type=whole_number(1, MAX_TRANSFERS), default=500)
    demo.add_argument("--concurrency", type=whole_number(1, MAX_CONCURRENCY), default=32)
    demo.add_argument("--seed", type=whole_number(-MAX_SEED, MAX_SEED), default=None)
    demo.add_argument("--credit-fault-rate", type=float, default=0.3)
    demo.add_argument("--db", type=Path, default=None, help="keep the saga log here (default: a temporary file)")


def run_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from server.process import ServerProcess

    print(
        f"starting bank A ({', '.join(BANK_A)}) and bank B ({', '.join(BANK_B)}), each with 100000 per account,",
        file=out,
    )
    print(f"with {args.credit_fault_rate:.0%} of credits failing on purpose ...", file=out)
    with (
        ServerProcess(BANK_A, credit_fault_rate=args.credit_fault_rate) as bank_a,
        ServerProcess(BANK_B, credit_fault_rate=args.credit_fault_rate) as bank_b,
        tempfile.TemporaryDirectory(prefix="saga-demo-") as scratch,
    ):
        db = args.db or Path(scratch) / "saga.db"
        print(f"bank A at {bank_a.url}, bank B at {bank_b.url}, saga log at {db}", file=out)
        report = asyncio.run(_run(args, bank_a.url, bank_b.url, db, err))
    print("\nsummary", file=out)
    print(report.render(), file=out)
    print(f"\nmoney conserved: {'yes' if report.money_conserved else 'NO'}", file=out)
    if report.violations:
        print(f"{len(report.violations)} invariants BROKEN", file=out)
        return 3
    print("every invariant holds: the money is exactly where the sagas say it is", file=out)
    return 0


async def _run(args: argparse.Namespace, source_url: str, target_url: str, db: Path, err: TextIO) -> batch.BatchReport:
    from saga.cli import progress_bar

    log = await SqliteSagaLog.open(db)
    try:
        async with Orchestrator(log, concurrency=args.concurrency) as orchestrator:
            before = await services.snapshot(orchestrator, [source_url, target_url])
            planned = batch.plan(
                batch.Workload(args.transfers, max_amount=500, seed=args.seed), source_url, target_url, before
            )
            print(f"running {len(planned)} transfers from bank A to bank B, {args.concurrency} at a time", file=err)
            return await batch.run(
                orchestrator, planned, [source_url, target_url], progress=progress_bar(err), before=before
            )
    finally:
        await log.close()
