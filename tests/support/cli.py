"""Running ``python -m saga`` as a user would: a real process, no standard input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

from server.process import REPO_ROOT


def saga_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "saga", *args]


def saga_cli(*args: str, timeout: float = 120, wrapper: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run ``python -m saga args``; ``wrapper`` is a command to run it under (see :func:`unprivileged`)."""
    return subprocess.run(
        [*wrapper, *saga_command(*args)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def unprivileged() -> list[str]:
    """A wrapper under which file permissions bind, as for any user: root's override of them dropped."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "as root, setpriv (util-linux) is needed to drop the override of file permissions"
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def start_saga(*args: str) -> subprocess.Popen[str]:
    """``python -m saga args`` started in the background, no standard input, its output piped."""
    return subprocess.Popen(
        saga_command(*args),
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 180) -> tuple[str, str]:
    """The output of a process started with :func:`start_saga`; killed if it has not ended by ``timeout``."""
    try:
        return process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
