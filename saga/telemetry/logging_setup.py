"""Log lines of ``python -m saga``: JSON objects (with transaction_id and worker_id) or text.

The orchestrator writes one line per state change (logger ``saga.transitions``,
level info, so shown with ``-v``), retries and recoveries; warnings and
errors always. Text suits a terminal, JSON anything that collects logs.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from typing import TextIO

from server.shared.logformat import LogFormat, configure_logging


def worker_id() -> str:
    """This orchestrator process's name in log lines: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def log_format_for(args: argparse.Namespace, err: TextIO) -> LogFormat:
    chosen: LogFormat | None = getattr(args, "log_format", None)
    if chosen is not None:
        return chosen
    return "text" if err.isatty() else "json"


def configure_saga_logging(args: argparse.Namespace, err: TextIO) -> None:
    level = logging.INFO if getattr(args, "verbose", False) else logging.WARNING
    configure_logging(log_format_for(args, err), level, {"worker_id": worker_id()}, stream=err)
    # The HTTP client's own line per request repeats, without the saga's id, what each attempt records.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
