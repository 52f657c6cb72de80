"""The same seed replays the same run, event for event, in this process or any other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from saga.simulation import simulate

REPOSITORY = Path(__file__).resolve().parents[2]


def test_the_same_seed_gives_the_same_trace_sagas_and_faults() -> None:
    first, second = simulate(5, 150), simulate(5, 150)
    assert len(first.trace) > 150
    assert first.trace == second.trace
    assert first.trace_digest == second.trace_digest
    assert first.fault_counts == second.fault_counts
    assert [(saga.transaction_id, saga.state, saga.attempts) for saga in first.sagas] == [
        (saga.transaction_id, saga.state, saga.attempts) for saga in second.sagas
    ]


def test_different_seeds_give_different_traces() -> None:
    first, second = simulate(5, 150), simulate(6, 150)
    assert first.trace != second.trace
    assert first.trace_digest != second.trace_digest


def test_the_trace_is_the_same_in_other_processes_whatever_their_string_hashing() -> None:
    # Iterating over a set of strings follows the per-process hash seed:
    # anything that did so would make a seed replay differently elsewhere.
    digests = set()
    for hash_seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-m", "saga.simulation", "--seed", "5", "--transfers", "150", "--json"],
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        (run,) = json.loads(done.stdout.splitlines()[-1])["runs"]
        digests.add(run["trace_digest"])
    assert digests == {simulate(5, 150).trace_digest}


def test_two_runs_of_one_seed_print_byte_identical_output_log_lines_included() -> None:
    # Wall-clock times or a process id in a log line would tell two replays apart.
    commands = {
        "python -m saga simulate": [sys.executable, "-m", "saga", "simulate", "--seed", "3", "--transfers", "30"],
        "python -m saga.simulation, two jobs": [
            sys.executable, "-m", "saga.simulation", "--seed", "3", "--seeds", "2", "--transfers", "30", "--jobs", "2",
        ],
    }  # fmt: skip
    for name, command in commands.items():
        runs = [
            subprocess.run(command, cwd=REPOSITORY, capture_output=True, timeout=120, check=False) for _ in range(2)
        ]
        first, second = runs
        assert first.returncode == 0, (name, first.stderr)
        assert first.stderr, f"{name}: seed 3 logs sagas left for recovery; without log lines this proves nothing"
        assert (first.stdout, first.stderr) == (second.stdout, second.stderr), name
        assert b'"virtual_time":' in first.stderr, (name, first.stderr[:300])
