"""Every code block the documentation marks runnable runs as written, and succeeds.

The convention, in every Markdown file of the repository:

- A block runs when the line right before its opening fence is ``<!-- runnable -->``, an HTML comment that
  renders as nothing. Only ``sh``/``bash`` and ``python`` blocks carry it. Illustrative output (``text``,
  JSON answers), blocks with placeholders (``9f8d9dfa-…``) and Compose blocks (no Docker engine here) never do.
- ``<!-- runnable with: SHELL -->`` runs SHELL first, in the same shell, and waits until every port it names
  accepts connections: SHELL starts, in the background, the services that the prose before the block asks
  the reader to have running (``python -m server --port 8000 &``).
- A shell block runs in ``bash -e -o pipefail``; a Python block with the python of the environment that runs
  the tests. Each runs in a fresh temporary folder, with that environment's ``bin`` first on PATH and the
  repository on PYTHONPATH; a block that needs a file writes it there.
- Every loopback port a block names (``127.0.0.1:PORT``, ``localhost:PORT``, ``--port PORT``; PostgreSQL's
  5432 aside) is replaced by a free one, the same number by the same port throughout the block and its
  setup, so that runs side by side never collide.
- A block that starts a process in the background uses it and stops it in the same block: one left running
  when the block ends fails it. Each block runs in a session of its own, whose whole process group is
  killed afterwards (and at the timeout), whatever the block did.
- A block that needs PostgreSQL (127.0.0.1:5432, user postgres) creates uniquely named databases
  (``createdb NAME_$$``) and drops them before it ends.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from server.process import REPO_ROOT
from tests.support.markdown import CodeBlock, code_blocks, documentation_files

#: Seconds one block may take, its services' start-up included, on a busy 2-core machine.
TIMEOUT = 240
#: Seconds a block's processes have to end after SIGTERM before they are killed.
GRACE = 10
PORT = re.compile(r"(?:(?<=127\.0\.0\.1:)|(?<=localhost:)|(?<=--port ))(?P<port>\d{2,5})\b")
POSTGRESQL_PORT = 5432
#: What a block must not inherit from the shell that runs the tests: it would change what the commands do.
PROGRAM_ENVIRONMENT = re.compile(r"^(SAGA|ACCOUNTS)_")


def runnable_blocks() -> list[CodeBlock]:
    return [block for path in documentation_files() for block in code_blocks(path) if block.marker is not None]


def free_ports(count: int) -> list[int]:
    """``count`` different ports that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def with_free_ports(*texts: str) -> tuple[list[str], list[int]]:
    """``texts`` with every loopback port they name moved to a free one; the free ports, in order."""
    named = sorted({int(match["port"]) for text in texts for match in PORT.finditer(text)} - {POSTGRESQL_PORT})
    moved = dict(zip(named, free_ports(len(named)), strict=True))

    def move(match: re.Match[str]) -> str:
        return str(moved.get(int(match["port"]), match["port"]))

    return [PORT.sub(move, text) for text in texts], list(moved.values())


def script_for(block: CodeBlock, folder: Path) -> str:
    """The bash script that runs ``block``: its setup, a wait for the setup's ports, then the block."""
    (setup, text), _ = with_free_ports(block.setup or "", block.text)
    setup_ports = sorted({int(match["port"]) for match in PORT.finditer(setup)} - {POSTGRESQL_PORT})
    lines = []
    if block.setup is not None:
        lines.append(setup)
        for port in setup_ports:
            lines.append(
                f"for _ in $(seq 1200); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.1; done"
            )
    if block.language == "python":
        program = folder / "block.py"
        program.write_text(text, encoding="utf-8")
        lines.append(f"python {program}")
    else:
        lines.append(text)
    return "\n".join(lines) + "\n"


def environment() -> dict[str, str]:
    inherited = {name: value for name, value in os.environ.items() if not PROGRAM_ENVIRONMENT.match(name)}
    venv_bin = str(Path(sys.executable).parent)
    return {
        **inherited,
        "PATH": os.pathsep.join([venv_bin, inherited.get("PATH", "")]),
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
    }


def group_alive(group: int) -> bool:
    """Whether a process of ``group`` still runs: a zombie waiting for whoever reaps orphans does not count."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="utf-8", errors="replace").rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended while being read
        state, process_group = fields[0], int(fields[2])
        if process_group == group and state != "Z":
            return True
    return False


def wait_for_group_to_end(group: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not group_alive(group):
            return True
        time.sleep(0.1)
    return not group_alive(group)


def stop_group(group: int) -> None:
    """SIGTERM every process of the block's session, then SIGKILL whatever is left after the grace period."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sent)
        except ProcessLookupError:
            return
        if wait_for_group_to_end(group, GRACE):
            return


@dataclass(frozen=True)
class Outcome:
    #: The block's exit status; None when it did not end within the timeout.
    status: int | None
    #: Whether a process the block started was still running after the grace period.
    left_running: bool
    #: The end of what the block wrote, standard output and standard error together.
    said: str


def run_block(block: CodeBlock, folder: Path, timeout: float = TIMEOUT, grace: float = GRACE) -> Outcome:
    """Run ``block`` in ``folder``, in a session of its own, and kill whatever of it is left afterwards."""
    script = folder / "block.sh"
    script.write_text(script_for(block, folder), encoding="utf-8")
    output = folder / "output.txt"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", str(script)],
            cwd=folder,
            env=environment(),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    status: int | None = None
    left_running = False
    try:
        status = process.wait(timeout=timeout)
        # The services a setup starts are the runner's to stop; the block's own are the block's.
        if block.setup is None:
            left_running = not wait_for_group_to_end(process.pid, grace)
    except subprocess.TimeoutExpired:
        pass
    finally:
        stop_group(process.pid)
        process.wait()
    return Outcome(status, left_running, output.read_text(encoding="utf-8", errors="replace")[-6000:])


@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda block: block.name)
def test_the_block_runs(block: CodeBlock, tmp_path: Path) -> None:
    outcome = run_block(block, tmp_path)
    assert outcome.status is not None, f"{block.name} did not end within {TIMEOUT} s:\n{outcome.said}"
    assert outcome.status == 0, f"{block.name} exited {outcome.status}:\n{outcome.said}"
    assert not outcome.left_running, f"{block.name} left a process running:\n{outcome.said}"


def synthetic(text: str, language: str = "sh", setup: str | None = None) -> CodeBlock:
    return CodeBlock(REPO_ROOT / "README.md", 1, language, text, "<!-- runnable -->", setup)


@pytest.mark.parametrize(
    ("block", "status", "left_running"),
    [
        (synthetic("true\nfalse\necho never\n"), 1, False),
        (synthetic("false | cat\n"), 1, False),
        (synthetic("sleep 300 &\n"), 0, True),
        (synthetic("import sys\nsys.exit(3)\n", "python"), 3, False),
        (synthetic("sleep 300 &\nkill $(jobs -p)\n"), 0, False),
    ],
    ids=["a failing command", "a failing pipe", "a process left running", "a failing program", "a clean block"],
)
def test_the_runner_fails_what_a_reader_would_see_fail(
    block: CodeBlock, status: int, left_running: bool, tmp_path: Path
) -> None:
    outcome = run_block(block, tmp_path, timeout=60, grace=1)
    assert (outcome.status, outcome.left_running) == (status, left_running)
    assert "never" not in outcome.said


def test_a_block_past_its_timeout_is_stopped_with_everything_it_started(tmp_path: Path) -> None:
    marker = tmp_path / "still-running"
    block = synthetic(f"(sleep 2; touch {marker}) &\nsleep 300\n")
    outcome = run_block(block, tmp_path, timeout=0.5, grace=1)
    assert outcome.status is None
    time.sleep(2.5)
    assert not marker.exists()


def test_a_setups_services_answer_before_the_block_runs(tmp_path: Path) -> None:
    block = synthetic("curl -sf -o /dev/null http://127.0.0.1:8001/healthz\n", setup="python -m server --port 8001 &")
    outcome = run_block(block, tmp_path, timeout=60, grace=1)
    assert outcome.status == 0, outcome.said


def test_the_documentation_has_runnable_blocks_in_every_readme_that_shows_commands() -> None:
    files = {block.path.relative_to(REPO_ROOT).as_posix() for block in runnable_blocks()}
    assert {"README.md", "server/README.md", "saga/README.md", "openapi/README.md"} <= files


def test_ports_are_moved_consistently_and_postgresql_is_left_alone() -> None:
    (setup, text), ports = with_free_ports(
        "python -m server --port 8001 &",
        "curl http://127.0.0.1:8001/x localhost:8002 postgresql://postgres@127.0.0.1:5432/db --amount 8001",
    )
    assert len(ports) == 2
    assert setup == f"python -m server --port {ports[0]} &"
    assert text == (
        f"curl http://127.0.0.1:{ports[0]}/x localhost:{ports[1]} postgresql://postgres@127.0.0.1:5432/db --amount 8001"
    )
