"""The simulator's teeth: every known-bad variant under patches/ must be caught.

Each patch is applied to a scratch copy of the committed repository (with
the simulator as it is in the working tree), and the copy's simulator runs
in a child process: a few seeds of 200 transfers, stopping at the first
violation. The same run on an unpatched copy must stay clean, so a catch is
the patch's doing, not the copy's. A patch the simulator cannot see (one in
the PostgreSQL store's SQL) has no ``# simulator-catches:`` line, and its
``# caught-by:`` tests must each fail in the patched copy and pass in an
unpatched one. Every patch names its ``# caught-by:`` tests.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import MappingProxyType

import pytest

from evaluation.teeth import (
    REPOSITORY,
    KnownBadVariant,
    check_applies_to_head,
    copy_repository,
    judge,
    judge_by_tests,
    known_bad_variants,
)
from tests.support.postgres import require_server

#: patch name -> the invariant the simulator must report as broken (its
#: ``# simulator-catches:`` line), or, for a patch the simulator cannot see,
#: the first of its ``# caught-by:`` tests, which must all fail.
EXPECTED_CATCHES = MappingProxyType(
    {
        "idempotency-check-removed": "no operation applied twice",
        "compensation-mints-money": "money conserved",
        "compensate-without-fencing-credit": "money conserved",
        "check-and-write-straddle-await": "no negative balance",
        "float-money": "ledger agrees with its journal",
        "log-after-send": "money moves only for logged sagas",
        "credit-after-compensation-not-fenced": "money conserved",
        "restart-loses-fences": "money conserved",
        # Its first catch (seed 4 of 200 transfers since the workload has deadlines and submissions) is
        # a saga whose debit and credit the lost run had both given back: it completes with nothing moved.
        "resumed-saga-trusts-a-restored-log": "balances match the sagas",
        "memory-log-epoch-check-dropped": "no commit from a stale epoch",
        "forward-request-after-deadline": "no forward request after the deadline",
        "transfer-completed-credit-reversal": (
            "tests/in_process/test_ledger.py::"
            "test_after_transfer_completed_the_credit_cannot_be_reversed_and_no_money_is_destroyed"
        ),
        "resumed-saga-trusts-unrecorded-refusals": (
            "tests/in_process/test_saga_decisions.py::"
            "test_a_recovered_credit_refused_401_is_fenced_since_the_lost_run_may_have_applied_it"
        ),
        "postgres-log-epoch-check-dropped": (
            "tests/in_process/test_saga_log_contract.py::"
            "test_a_commit_from_a_stale_epoch_raises_lease_lost_and_writes_nothing[postgresql]"
        ),
        "postgres-fence-check-dropped": (
            "tests/live/test_postgres_store.py::test_a_debit_or_credit_after_its_own_compensation_is_fenced"
        ),
        "postgres-credit-reversal-to-zero-refused": (
            "tests/in_process/test_ledger_answers.py::test_each_answer_is_recorded_field_by_field_and_replayed_exactly"
            "[compensate_credit-reverses-to-exactly-0-postgresql]"
        ),
        "postgres-credit-reversed-after-transfer-completed": (
            "tests/in_process/test_ledger_answers.py::test_each_answer_is_recorded_field_by_field_and_replayed_exactly"
            "[compensate_credit-after-transfer_completed-postgresql]"
        ),
        "reversal-over-limit-recorded-as-final": (
            "tests/in_process/test_ledger_answers.py::"
            "test_a_debit_that_cannot_be_given_back_for_want_of_room_is_given_back_once_there_is_room[memory]"
        ),
        "transfers-service-name-taken-as-url": (
            "tests/in_process/test_service_directory.py::test_an_unknown_name_is_refused_naming_the_known_ones"
        ),
        "transfers-key-of-another-caller-replayed": (
            "tests/in_process/test_transfers_app.py::"
            "test_with_api_tokens_every_route_but_health_needs_one_and_the_caller_is_recorded"
        ),
        "sqlite-balance-limit-unchecked": (
            "tests/in_process/test_sqlite_store.py::test_the_database_refuses_what_the_ledger_never_holds"
            "[UPDATE accounts SET balance = 9007199254740992 WHERE user_id = 'alice'-CHECK]"
        ),
    }
)


def variant_named(name: str) -> KnownBadVariant:
    (variant,) = [variant for variant in known_bad_variants() if variant.name == name]
    return variant


def test_every_patch_under_patches_has_an_expected_catch() -> None:
    assert sorted(variant.name for variant in known_bad_variants()) == sorted(EXPECTED_CATCHES)


@pytest.mark.parametrize("name", sorted(EXPECTED_CATCHES))
def test_the_patch_says_what_it_breaks_and_applies_to_head(name: str) -> None:
    variant = variant_named(name)
    assert variant.breaks
    check_applies_to_head(variant)


@pytest.mark.parametrize("name", sorted(EXPECTED_CATCHES))
def test_the_patch_names_the_tests_that_catch_it(name: str) -> None:
    assert variant_named(name).caught_by


CAUGHT_BY_SIMULATOR = sorted(name for name in EXPECTED_CATCHES if variant_named(name).simulator_catches)
CAUGHT_BY_TESTS = sorted(name for name in EXPECTED_CATCHES if name not in CAUGHT_BY_SIMULATOR)


@pytest.mark.parametrize("name", CAUGHT_BY_SIMULATOR)
def test_the_simulator_catches_the_patch(name: str, tmp_path: Path) -> None:
    variant = variant_named(name)
    assert variant.simulator_catches == EXPECTED_CATCHES[name]
    verdict = judge(variant, tmp_path)
    assert verdict.exit_code == 1, verdict.stderr[-3000:]
    broken = verdict.invariants_broken
    assert any(invariant.startswith(EXPECTED_CATCHES[name]) for invariant in broken), broken


@pytest.mark.parametrize("name", CAUGHT_BY_TESTS)
def test_the_named_tests_catch_the_patch(name: str, tmp_path: Path) -> None:
    require_server()
    variant = variant_named(name)
    assert variant.caught_by[0] == EXPECTED_CATCHES[name]
    verdict = judge_by_tests(variant, tmp_path, variant.caught_by)
    assert verdict.caught, verdict.output[-3000:]


@pytest.mark.parametrize("name", CAUGHT_BY_TESTS)
def test_the_unpatched_copy_passes_the_named_tests(name: str, tmp_path: Path) -> None:
    require_server()
    verdict = judge_by_tests(None, tmp_path, variant_named(name).caught_by)
    assert verdict.passed, verdict.output[-3000:]
    assert verdict.failed == []


def test_the_unpatched_copy_passes_the_same_runs(tmp_path: Path) -> None:
    verdict = judge(None, tmp_path)
    assert verdict.exit_code == 0, verdict.stderr[-3000:]
    assert len(verdict.runs) == 5
    assert verdict.invariants_broken == []


def test_the_copy_is_head_with_the_simulator_of_the_working_tree(tmp_path: Path) -> None:
    copy_repository(tmp_path)
    assert (tmp_path / "saga" / "simulation" / "simulator.py").read_bytes() == (
        REPOSITORY / "saga" / "simulation" / "simulator.py"
    ).read_bytes()
    committed_ledger = subprocess.run(
        ["git", "show", "HEAD:server/ledger.py"], cwd=REPOSITORY, capture_output=True, check=True
    ).stdout
    assert (tmp_path / "server" / "ledger.py").read_bytes() == committed_ledger
    assert not (tmp_path / ".venv").exists()
