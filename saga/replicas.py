"""One service, several URLs: replica processes over one database.

A request goes to one URL of the service. Only when it provably never reached
that replica (the connection could not be made) does the saga try the next
URL. Any other failure (a timeout, a broken connection, an answer of any
status) may hide an applied request, and is left to the saga's retry and
compensation rules as before.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
import httpx

T = TypeVar("T")


def unreachable(error: BaseException) -> bool:
    """True if ``error`` means the connection was never made, so the request was never sent."""
    if isinstance(error, httpx.ConnectError):
        return True
    # httpx-aiohttp reports every aiohttp connection error as httpx.ConnectTimeout,
    # a refused connection and a connection dropped after the request went out
    # alike; only the aiohttp cause tells a failed connect from the rest. So a
    # ConnectTimeout without that cause does not count: it may be either.
    return isinstance(error, httpx.TransportError) and isinstance(error.__cause__, aiohttp.ClientConnectorError)


def describe(error: BaseException) -> str:
    """``error``'s real kind, for the attempt log and error messages: ``ConnectError: connection refused``.

    httpx-aiohttp names every aiohttp connection error ``ConnectTimeout``; a
    refused connection reported as a timeout sends an operator looking at the
    network instead of at the service that is down.
    """
    cause = error.__cause__
    if unreachable(error):
        detail = _os_reason(error) or str(error)
        return f"ConnectError: {detail}" if detail else "ConnectError"
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return "ConnectTimeout"
    if isinstance(error, httpx.ConnectTimeout) and isinstance(cause, aiohttp.ClientError):
        # A connection that broke after it was made, e.g. ServerDisconnectedError.
        return type(cause).__name__
    return type(error).__name__


def _os_reason(error: BaseException) -> str | None:
    """The operating system's reason at the root of ``error`` ("connection refused"), if there is one."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, OSError) and link.errno is not None:
            text = os.strerror(link.errno) if link.errno > 0 else (link.strerror or "")
            if text:
                return text[0].lower() + text[1:]
        link = link.__cause__ or link.__context__
    return None


class Replicas:
    """Which URL of a service to try first: the last one that was reached.

    Sticky rather than rotating, so that a dead replica costs one failed
    connection per orchestrator, not one per request; and with one URL per
    service, as in the simulator, nothing changes at all.
    """

    def __init__(self) -> None:
        self._reached: dict[tuple[str, ...], str] = {}

    def in_order(self, urls: tuple[str, ...]) -> tuple[str, ...]:
        preferred = self._reached.get(urls)
        if preferred is None:
            return urls
        start = urls.index(preferred)
        return urls[start:] + urls[:start]

    def reached(self, urls: tuple[str, ...], url: str) -> None:
        self._reached[urls] = url


async def first_reachable(urls: tuple[str, ...], replicas: Replicas, call: Callable[[str], Awaitable[T]]) -> T:
    """``call`` one URL of a service after another until one can be connected to.

    Raises what the last URL raised if none could be, and at once what any
    URL raised that was not a failure to connect.
    """
    if not urls:
        raise ValueError("a service needs at least one URL")
    failure: BaseException | None = None
    for url in replicas.in_order(urls):
        try:
            result = await call(url)
        except Exception as error:
            if not unreachable(error):
                raise
            failure = error
            continue
        replicas.reached(urls, url)
        return result
    assert failure is not None
    raise failure


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a service URL, or None if it can."""
    if not url.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    if url.rstrip("/") in ("http:", "https:"):
        return "names no host"
    if "," in url or any(character.isspace() for character in url):
        # A comma separates the URLs of one service on the command line and in the saga log.
        return "must not contain a comma or whitespace"
    return None


def parse_urls(text: str) -> tuple[str, ...]:
    """The URLs of one service from a comma-separated list; ValueError, in one line, for a bad one."""
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise ValueError(f"empty URL in the list {text!r}")
    for item in items:
        problem = url_problem(item)
        if problem is not None:
            raise ValueError(f"service URL {item!r} {problem}")
    return tuple(dict.fromkeys(item.rstrip("/") for item in items))
