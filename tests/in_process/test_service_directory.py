"""Accounts services by name: the only addresses a saga process sends to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saga.directory import ServiceDirectory, UnknownService, directory_from
from saga.records import AccountRef


def test_a_name_gives_its_services_urls_and_an_account_that_remembers_the_name() -> None:
    directory = directory_from(["bank-a=http://127.0.0.1:8001,http://127.0.0.1:8002"])
    account = directory.account("bank-a", "alice")
    assert account.urls == ("http://127.0.0.1:8001", "http://127.0.0.1:8002")
    assert account.service == "bank-a"
    assert account.user_id == "alice"


def test_an_unknown_name_is_refused_naming_the_known_ones() -> None:
    directory = directory_from(["bank-a=http://127.0.0.1:8001"])
    with pytest.raises(UnknownService, match=r"'http://evil'.*known: bank-a"):
        directory.account("http://evil", "alice")


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["bank-a"], "NAME=URL"),
        (["=http://127.0.0.1:8001"], "NAME=URL"),
        (["bank a=http://127.0.0.1:8001"], "service name"),
        (["-bank=http://127.0.0.1:8001"], "service name"),
        (["bank-a=ftp://127.0.0.1"], "http://"),
        (["bank-a=http://127.0.0.1:8001", "bank-a=http://127.0.0.1:8002"], "twice"),
        (["bank-a=http://127.0.0.1:8001", "bank-b=http://localhost:8001"], "share a URL"),
    ],
)
def test_a_bad_directory_is_refused_in_one_line(flags: list[str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        directory_from(flags)


def test_a_logged_account_goes_to_the_urls_this_process_knows_for_its_name() -> None:
    directory = directory_from(["bank-a=http://10.0.0.9:8001"])
    logged = AccountRef("http://127.0.0.1:8001", "alice", "bank-a")
    assert directory.resolve(logged) == AccountRef("http://10.0.0.9:8001", "alice", "bank-a")


def test_a_logged_account_keeps_its_logged_urls_without_a_name_or_with_a_name_unknown_here() -> None:
    directory = directory_from(["bank-a=http://10.0.0.9:8001"])
    unnamed = AccountRef("http://127.0.0.1:8001", "alice")
    elsewhere = AccountRef("http://127.0.0.1:8003", "carol", "bank-c")
    assert directory.resolve(unnamed) is unnamed
    assert directory.resolve(elsewhere) is elsewhere


def test_a_services_file_and_flags_make_one_directory(tmp_path: Path) -> None:
    file = tmp_path / "services.json"
    file.write_text(json.dumps({"bank-a": ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]}), encoding="utf-8")
    directory = directory_from(["bank-b=http://127.0.0.1:8003"], file)
    assert directory.names == ["bank-a", "bank-b"]
    assert directory.to_json()["bank-a"] == ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]


@pytest.mark.parametrize("content", ["[]", '{"bank-a": []}', '{"bank-a": 5}', "not json"])
def test_a_services_file_that_is_not_names_to_urls_is_refused(tmp_path: Path, content: str) -> None:
    file = tmp_path / "services.json"
    file.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=r"services file|must be a URL"):
        directory_from([], file)


def test_an_empty_directory_is_false() -> None:
    assert not ServiceDirectory()
    assert ServiceDirectory({"bank-a": ("http://127.0.0.1:8001",)})
