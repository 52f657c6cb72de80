"""Running ``python -m saga`` as a user would: a real process, no standard input."""

from __future__ import annotations

import subprocess
import sys

from server.process import REPO_ROOT


def saga_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "saga", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
