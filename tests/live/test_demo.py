"""``make run``: the demo through the transfers service, with bank B and then the service itself killed mid-batch.

The demo's report comes from the API and the banks; the saga log it leaves
behind (``--db``) is read here on its own, so that the report is checked
against the record and not only against itself.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path

from saga.logs import SqliteSagaLog
from saga.records import Event, SagaRecord
from saga.states import SagaState
from tests.support.cli import saga_cli

EACH_BANK = 300_000


def summary_rows(stdout: str) -> dict[str, str]:
    table = stdout.split("\nsummary\n", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines():
        found = re.fullmatch(r"  (\S.*?)\s{2,}(.*)", line)
        if found:
            rows[found[1]] = found[2]
    return rows


def read_log(db: Path) -> tuple[list[SagaRecord], dict[str, list[Event]]]:
    async def read() -> tuple[list[SagaRecord], dict[str, list[Event]]]:
        log = await SqliteSagaLog.open(db, create=False, exclusive=False)
        try:
            records = await log.sagas()
            return records, {r.transaction_id: await log.history(r.transaction_id) for r in records}
        finally:
            await log.close()

    return asyncio.run(read())


def test_the_demo_loses_nothing_to_either_kill_and_its_report_agrees_with_the_saga_log(tmp_path: Path) -> None:
    db = tmp_path / "saga.db"
    demo = saga_cli("demo", "--transfers", "200", "--seed", "5", "--db", str(db), timeout=180)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    out = demo.stdout
    assert "\nmoney conserved: yes\n" in out
    assert (
        "bank B was killed with SIGKILL after 100 of 200 submissions and restarted on the same ledger file; "
        "it lost nothing: money conserved, every audit trail intact"
    ) in out
    service_line = re.search(
        r"^the transfers service was killed with SIGKILL after 160 of 200 submissions and restarted on the same "
        r"saga log; (\d+) POSTs were sent again under their keys, (\d+) sagas resumed by the new process; "
        r"it lost nothing: one transfer per key, each final$",
        out,
        re.MULTILINE,
    )
    assert service_line is not None, out
    assert out.rstrip().endswith("every invariant holds: the money is exactly where the sagas say it is")

    rows = summary_rows(out)
    assert rows["transfers"] == "200"
    assert rows["still pending"] == "0"
    assert rows["needs_attention"] == "0"
    assert rows["transaction ids"] == "200 for 200 keys"
    assert rows["total over all services"] == f"{2 * EACH_BANK} -> {2 * EACH_BANK}"
    assert rows["invariants"] == "all hold"
    posts = re.fullmatch(r"(\d+) \((\d+) sent again under their keys, (\d+) answered as replays\)", rows["POSTs sent"])
    assert posts is not None
    sent_again = int(posts[2])
    # The service died with 40 submissions to go: those in flight at the kill were sent again.
    assert sent_again > 0
    assert int(posts[1]) == 200 + sent_again
    assert int(service_line[1]) == sent_again

    # The record the killed and restarted service kept, read without it.
    records, histories = read_log(db)
    run = re.search(r"under the keys (demo-[0-9a-f]+-)1 to ", demo.stderr)
    assert run is not None, demo.stderr
    assert sorted(r.idempotency_key or "" for r in records) == sorted(f"{run[1]}{n}" for n in range(1, 201))
    states = Counter(r.state for r in records)
    assert all(state.is_terminal for state in states)
    for state in (SagaState.COMPLETED, SagaState.COMPENSATED, SagaState.FAILED):
        assert rows[state.value.lower()] == str(states[state])
    moved = sum(r.amount for r in records if r.state is SagaState.COMPLETED)
    assert rows["total at bank-a"] == f"{EACH_BANK} -> {EACH_BANK - moved}"
    assert rows["total at bank-b"] == f"{EACH_BANK} -> {EACH_BANK + moved}"
    resumed = [t for t, events in histories.items() if len({e.owner for e in events if e.kind == "claim"}) > 1]
    assert rows["sagas resumed by a new process"] == str(len(resumed)) == service_line[2]

    # The example timeline is one transfer's history in the log, event for event.
    timeline = out.split("one transfer's timeline, from GET /transfers/{id}/events:\n", 1)[1].split("\n\n", 1)[0]
    transaction_id = timeline.split(":", 1)[0].strip()
    assert transaction_id in histories
    assert len(re.findall(r"^ {4}\s*\d+ ms  ", timeline, re.MULTILINE)) == len(histories[transaction_id])


def test_quiet_prints_only_the_verdict(tmp_path: Path) -> None:
    demo = saga_cli("demo", "--transfers", "20", "--no-restart", "--quiet", "--db", str(tmp_path / "saga.db"))
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert demo.stdout.strip().splitlines() == [
        "money conserved: yes",
        "every invariant holds: the money is exactly where the sagas say it is",
    ]
    assert demo.stderr == ""
