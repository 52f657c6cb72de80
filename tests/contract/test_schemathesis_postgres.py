"""The contract run, every check on and credit faults off, against a service backed by PostgreSQL.

The same schemathesis CLI run as ``make contract``'s first (run_schemathesis.py),
with fewer examples, on a ``python -m server --database postgresql://…``.
"""

from __future__ import annotations

from tests.contract.run_schemathesis import RUNS, build_parser, execute


def test_a_postgresql_backed_service_meets_the_contract(pg_dsn: str) -> None:
    args = build_parser().parse_args(["--database", pg_dsn, "--faults-off-only", "--max-examples", "12"])
    outcome = execute(RUNS[0], 1, 1, args)
    assert outcome.passed, (outcome.returncode, outcome.problems)
    assert outcome.links, "the stateful phase followed no link"
