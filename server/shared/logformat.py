"""Log lines for an operator: one JSON object per line, or the same fields as readable text.

A record may carry structured fields (``extra={"fields": {...}}``), such as
the ``transaction_id`` it concerns; the process's own fields (the replica or
worker id) are added to every line. Used by ``python -m server`` and
``python -m saga`` alike, so one transfer can be followed through both by its id.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["json", "text"]
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "text")


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, Mapping) else {}


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonLineFormatter(logging.Formatter):
    """Every record as one JSON object on one line, with ``transaction_id`` always present (null if none)."""

    def __init__(self, process_fields: Mapping[str, Any]) -> None:
        super().__init__()
        self.process_fields = dict(process_fields)

    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record)
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "transaction_id": fields.pop("transaction_id", None),
        }
        line.update(fields)
        for name, value in self.process_fields.items():
            line.setdefault(name, value)
        message = record.getMessage()
        if message:
            line["message"] = message
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)


class TextLineFormatter(logging.Formatter):
    """Every record as ``time level logger message key=value ...``: for a person at a terminal."""

    def __init__(self, process_fields: Mapping[str, Any]) -> None:
        super().__init__()
        self.process_fields = dict(process_fields)

    def format(self, record: logging.LogRecord) -> str:
        fields = {**record_fields(record), **self.process_fields}
        parts = [_timestamp(record), record.levelname, record.name]
        message = record.getMessage()
        if message:
            parts.append(message)
        parts += [f"{name}={value}" for name, value in fields.items() if value is not None]
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(
    log_format: LogFormat, level: int | str, process_fields: Mapping[str, Any], stream: TextIO | None = None
) -> None:
    """Send every logger's records, as lines of ``log_format``, to ``stream`` (standard error)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter = JsonLineFormatter(process_fields) if log_format == "json" else TextLineFormatter(process_fields)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
