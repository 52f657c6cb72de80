"""One service, several URLs: replica processes over one database.

Each request goes to one URL of the service: the reachable one chosen least
recently, so the replicas share the load. Only when a request provably never
reached its replica (the connection could not be made) does the saga try
another URL; that URL is then tried last for a while. Any other failure (a
timeout, a broken connection, an answer of any status) may hide an applied
request, and is left to the saga's retry and compensation rules as before.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Final, TypeVar

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


#: Seconds a URL that could not be connected to is tried only after the others.
DOWN_SECONDS: Final = 5.0


class Replicas:
    """Which URL of a service each request goes to: the one not found down, chosen least recently.

    Least recently chosen rather than a turn kept per list of URLs: the
    choice belongs to the URL, so two spellings of one service's list (the
    source's and the target's, in another order) share the load as one
    list does. A URL that could not be connected to is down for
    ``down_for`` seconds: tried after every other URL, so a dead replica
    costs one failed connection per ``down_for`` seconds, not one per
    request; after that it is chosen again like the others, and stays
    down if it still refuses. A URL that is reached is up again at once.
    With one URL, as in the simulator, that URL is every request's.
    """

    def __init__(self, now: Callable[[], float] = time.monotonic, down_for: float = DOWN_SECONDS) -> None:
        self._now = now
        self._down_for = down_for
        self._choices = itertools.count(1)
        #: URL -> the number of the choice that last picked it.
        self._last_chosen: dict[str, int] = {}
        #: URL -> until when (on ``now``) it is tried last.
        self._down_until: dict[str, float] = {}

    def choose(self, urls: tuple[str, ...], tried: Collection[str] = ()) -> str | None:
        """The URL of ``urls`` for the next request, counted as chosen now; None once every URL is ``tried``.

        A URL not down, the least recently chosen (in the order given where
        none was chosen yet); else the one down longest. A request that
        could not connect asks again with the URLs it tried, so its next
        URL is chosen among the others as any request's is.
        """
        now = self._now()
        left = [url for url in urls if url not in tried]
        up = [url for url in left if not self.is_down(url, now)]
        if up:
            url = min(up, key=lambda url: self._last_chosen.get(url, 0))
        elif left:
            url = min(left, key=self._down_until.__getitem__)
        else:
            return None
        self._last_chosen[url] = next(self._choices)
        return url

    def is_down(self, url: str, now: float | None = None) -> bool:
        until = self._down_until.get(url)
        return until is not None and (self._now() if now is None else now) < until

    def reached(self, url: str) -> None:
        """A connection to ``url`` was made: it is up."""
        self._down_until.pop(url, None)

    def unreachable(self, url: str) -> None:
        """A connection to ``url`` could not be made: try it last for a while."""
        self._down_until[url] = self._now() + self._down_for


async def first_reachable(urls: tuple[str, ...], replicas: Replicas, call: Callable[[str], Awaitable[T]]) -> T:
    """``call`` one URL of a service after another until one can be connected to.

    Raises what the last URL raised if none could be, and at once what any
    URL raised that was not a failure to connect.
    """
    if not urls:
        raise ValueError("a service needs at least one URL")
    failure: BaseException | None = None
    tried: list[str] = []
    while (url := replicas.choose(urls, tried)) is not None:
        tried.append(url)
        try:
            result = await call(url)
        except Exception as error:
            if not unreachable(error):
                replicas.reached(url)
                raise
            replicas.unreachable(url)
            failure = error
            continue
        replicas.reached(url)
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
