"""The machine's own Chromium for the browser tests, driven by Python playwright.

playwright's browser download cannot work on a network without the internet,
which is what the pages under test must survive; Debian's package can be
installed from the distribution's mirror (.ci/run does).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    """The Chromium executable; skips (fails under CI=true) where there is none."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found is None:
        message = "no Chromium at /usr/bin/chromium (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}, and under CI=true the browser test must run")
        pytest.skip(message)
    return found
