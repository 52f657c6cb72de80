"""Bad input on the command line: one line, exit 2, nothing done; and no credential of a URL ever printed."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
from pathlib import Path

import pytest

from saga.logs import SqliteSagaLog
from saga.telemetry.logging_setup import configure_saga_logging
from saga.telemetry.redact import redact, redacting
from tests.support.cli import saga_cli
from tests.support.ports import dead_url

#: What a shell passes for $'a\xffb': a byte that is not UTF-8, which Python's argv holds as a lone surrogate.
NOT_UTF8 = os.fsdecode(b"a\xffb")


def refused(run_args: list[str], *, db: Path | None = None) -> str:
    """Run the CLI; assert it refused with exit 2 and one ``error:`` line, no traceback; return that line."""
    run = saga_cli(*run_args, *(["--db", str(db)] if db is not None else []))
    assert run.returncode == 2, (run_args, run.stdout, run.stderr)
    lines = run.stderr.splitlines()
    assert len(lines) == 1, (run_args, run.stderr)
    assert lines[0].startswith("error: "), (run_args, run.stderr)
    assert run.stdout == ""
    if db is not None:
        assert not db.exists(), "nothing may be done: not even the log created"
    return lines[0]


SUBMIT = ["submit", "--from", "alice", "--to", "bob", "--amount", "5", "--url", "http://127.0.0.1:9"]


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "empty"),
        ("k" * 256, "one character over 255"),
        ("k" * 6_000, "past PostgreSQL's btree row limit"),
        (NOT_UTF8, "bytes that are not UTF-8"),
        ("caf\u00e9", "not ASCII"),
        ("tab\there", "a control character"),
        (" padded", "a leading space, which HTTP would strip"),
    ],
)
def test_an_idempotency_key_is_1_to_255_printable_ascii_characters(key: str, why: str, tmp_path: Path) -> None:
    line = refused([*SUBMIT, "--idempotency-key", key], db=tmp_path / "saga.db")
    assert "idempotency key is 1-255 printable ASCII characters" in line, why
    # A key of thousands of characters is not echoed whole.
    assert len(line) < 400


def test_an_idempotency_key_of_255_printable_characters_is_taken(tmp_path: Path) -> None:
    db = tmp_path / "saga.db"
    key = "~ !" + "k" * 251 + "}"
    first = saga_cli(*SUBMIT, "--idempotency-key", key, "--db", str(db))
    assert first.returncode == 0, first.stderr
    again = saga_cli(*SUBMIT, "--idempotency-key", key, "--db", str(db))
    assert again.stdout == first.stdout, "the same key names the same transfer"


@pytest.mark.parametrize("command", ["show", "events"])
@pytest.mark.parametrize("transaction_id", ["", "a b", "x" * 129, NOT_UTF8, "id/with/slashes", "line\n"])
def test_a_transaction_id_follows_the_contracts_pattern(command: str, transaction_id: str, tmp_path: Path) -> None:
    db = tmp_path / "saga.db"
    asyncio.run(empty_log(db))
    line = refused([command, transaction_id, "--db", str(db)])
    assert "a transaction id is 1-128 of A-Z a-z 0-9 . _ : -" in line


def test_an_account_that_is_not_utf8_is_bad_input_naming_the_account(tmp_path: Path) -> None:
    dead = dead_url()
    line = refused(
        ["transfer", "--from", NOT_UTF8, "--to", "bob", "--amount", "5", "--url", dead], db=tmp_path / "saga.db"
    )
    assert "source user_id" in line
    assert "cannot reach" not in line
    line = refused(["submit", "--from", f"bank-a:{NOT_UTF8}", "--to", "bank-b:bob", "--amount", "5", "--api", dead])
    assert "--from takes SERVICE:USER_ID" in line


def test_a_password_in_a_url_is_never_printed(tmp_path: Path) -> None:
    port = dead_url().rsplit(":", 1)[1]
    url = f"http://user:secret@127.0.0.1:{port}"
    transfer = ["transfer", "--from", "alice", "--to", "bob", "--amount", "5", "--url", url]
    line = refused([*transfer, "--db", str(tmp_path / "saga.db")])
    assert "secret" not in line
    assert f"http://***@127.0.0.1:{port}" in line
    for database in ("mysql://dba:secret@127.0.0.1/sagas", "postgresql://dba:secret@127.0.0.1:1/sagas"):
        line = refused(["list", "--db", database])
        assert "secret" not in line, line
        assert "***@127.0.0.1" in line, line
    line = refused(["list", "--api", "ftp://dba:secret@127.0.0.1:1"])
    assert "secret" not in line, line


def test_a_services_file_that_names_a_service_twice_is_refused(tmp_path: Path) -> None:
    services = tmp_path / "services.json"
    services.write_text('{"bank-a": "http://127.0.0.1:9", "bank-a": "http://127.0.0.1:8"}', encoding="utf-8")
    db = tmp_path / "saga.db"
    asyncio.run(empty_log(db))
    for command in (["recover", "--db", str(db)], ["worker", "--db", str(db)]):
        line = refused([*command, "--services", str(services)])
        assert "the key 'bank-a' appears more than once" in line, line
    services.write_text('{"bank-a": NaN}', encoding="utf-8")
    assert "NaN is not a JSON number" in refused(["recover", "--db", str(db), "--services", str(services)])


def test_a_services_file_of_distinct_names_is_taken(tmp_path: Path) -> None:
    services = tmp_path / "services.json"
    services.write_text('{"bank-a": "http://127.0.0.1:9", "bank-b": ["http://127.0.0.1:8"]}', encoding="utf-8")
    db = tmp_path / "saga.db"
    asyncio.run(empty_log(db))
    run = saga_cli("recover", "--db", str(db), "--services", str(services), "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["recovered"] == []


async def empty_log(path: Path) -> None:
    log = await SqliteSagaLog.open(path)
    await log.close()


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("http://user:secret@127.0.0.1:1", "http://***@127.0.0.1:1"),
        ("postgresql://u:pw@db.internal/sagas", "postgresql://***@db.internal/sagas"),
        ("at http://a:p@ss@h:1/x and http://b:q@h:2", "at http://***@h:1/x and http://***@h:2"),
        ("http://h1,http://u:pw@h2", "http://h1,http://***@h2"),
        ("host=db password=secret dbname=sagas", "host=db password=*** dbname=sagas"),
        ("postgresql:///sagas?host=/run&password=secret", "postgresql:///sagas?host=/run&password=***"),
        (
            "alice@http://127.0.0.1:8000 and http://127.0.0.1/x@y",
            "alice@http://127.0.0.1:8000 and http://127.0.0.1/x@y",
        ),
    ],
)
def test_redact_masks_the_credentials_of_urls_and_dsns_and_nothing_else(text: str, masked: str) -> None:
    assert redact(text) == masked


def test_log_lines_mask_credentials_as_every_other_line_does() -> None:
    root = logging.getLogger()
    kept_handlers, kept_level = list(root.handlers), root.level
    written = io.StringIO()
    try:
        for log_format in ("json", "text"):
            configure_saga_logging(argparse.Namespace(log_format=log_format, verbose=False), redacting(written))
            logging.getLogger("saga").warning(
                "the saga log at %s failed",
                "postgresql://dba:secret@db/sagas",
                extra={"fields": {"url": "http://u:pw@h"}},
            )
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in kept_handlers:
            root.addHandler(handler)
        root.setLevel(kept_level)
    lines = written.getvalue().splitlines()
    assert len(lines) == 2
    assert "secret" not in written.getvalue()
    assert "u:pw" not in written.getvalue()
    assert "postgresql://***@db/sagas" in lines[0]
    assert json.loads(lines[0])["url"] == "http://***@h"
