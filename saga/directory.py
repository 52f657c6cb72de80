"""Accounts services by name: the only addresses a process that drives sagas will send to.

The transfers service is started with the services it may call::

    --service bank-a=http://127.0.0.1:8001,http://127.0.0.1:8002 --service bank-b=http://127.0.0.1:8003

(or ``--services services.json``, an object of name to a URL or a list of
URLs). A request names a service; the directory turns the name into its
URLs, so no field of a request can make the process connect anywhere else.

The saga log keeps each side's name beside the URLs it had when the saga was
recorded. A process that drives the saga later (``serve``, ``worker``,
``recover``) sends to the URLs its own directory gives for the name, and to
the logged URLs only if its directory does not know the name: a bank that
moves to new replicas needs new flags, not an edit of the log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Final

from saga.records import AccountRef
from saga.replicas import parse_urls

#: The transfers contract's ServiceName.
SERVICE_NAME_MAX_LENGTH: Final = 64
SERVICE_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SERVICE_NAME: Final = re.compile(SERVICE_NAME_PATTERN)


class UnknownService(LookupError):
    """A request named a service this process was not started with."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        names = ", ".join(sorted(known)) or "none"
        super().__init__(f"no accounts service is named {name!r} here (known: {names})")
        self.name = name


class ServiceDirectory:
    """Name -> the URLs of that accounts service's replicas."""

    def __init__(self, services: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self._services: dict[str, tuple[str, ...]] = {}
        for name, urls in (services or {}).items():
            self.add(name, urls)

    def add(self, name: str, urls: str | Iterable[str]) -> None:
        """Register one service; ValueError for a bad name, a name given twice, or a bad URL."""
        if not SERVICE_NAME.fullmatch(name):
            raise ValueError(
                f"service name {name!r} must be 1-64 of A-Z a-z 0-9 _ . - and start with a letter or digit"
            )
        if name in self._services:
            raise ValueError(f"service {name!r} is given twice")
        parsed = parse_urls(urls if isinstance(urls, str) else ",".join(urls))
        for other, known in self._services.items():
            if AccountRef(known, "").same_service(AccountRef(parsed, "")):
                raise ValueError(f"services {other!r} and {name!r} share a URL: one service cannot have two names")
        self._services[name] = parsed

    @property
    def names(self) -> list[str]:
        return sorted(self._services)

    def __bool__(self) -> bool:
        return bool(self._services)

    def urls(self, name: str) -> tuple[str, ...]:
        try:
            return self._services[name]
        except KeyError:
            raise UnknownService(name, self._services) from None

    def account(self, name: str, user_id: str) -> AccountRef:
        """The account ``user_id`` at the service called ``name``; UnknownService if there is none."""
        return AccountRef(self.urls(name), user_id, name)

    def resolve(self, account: AccountRef) -> AccountRef:
        """A logged account with the URLs this process knows for its service's name, else as logged."""
        if account.service is None or account.service not in self._services:
            return account
        urls = self._services[account.service]
        return account if urls == account.urls else replace(account, urls=urls)

    def to_json(self) -> dict[str, list[str]]:
        return {name: list(urls) for name, urls in sorted(self._services.items())}


def parse_service_flag(text: str) -> tuple[str, str]:
    """``NAME=URL[,URL…]`` -> (name, urls); ValueError says what is wrong."""
    name, sep, urls = text.partition("=")
    if not sep or not name.strip() or not urls.strip():
        raise ValueError(f"expected NAME=URL[,URL...], got {text!r}")
    return name.strip(), urls.strip()


def directory_from(flags: Iterable[str], file: Path | None = None) -> ServiceDirectory:
    """The directory from repeated ``--service NAME=URLS`` flags and an optional JSON file of name -> URL(s)."""
    directory = ServiceDirectory()
    if file is not None:
        try:
            document = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read the services file {file}: {error}") from None
        if not isinstance(document, dict):
            raise ValueError(f"the services file {file} must hold a JSON object of name to URL or list of URLs")
        for name, urls in document.items():
            if isinstance(urls, str) or (isinstance(urls, list) and urls and all(isinstance(url, str) for url in urls)):
                directory.add(name, urls)
            else:
                raise ValueError(f"service {name!r} in {file} must be a URL or a non-empty list of URLs")
    for flag in flags:
        directory.add(*parse_service_flag(flag))
    return directory
