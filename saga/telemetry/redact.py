"""Credentials are never printed: the user and password in a URL or a DSN are masked in every line written.

A service URL (``http://user:secret@host``), a saga log's database URL
(``postgresql://user:secret@host/db``) or a libpq DSN (``host=… password=…``)
may carry a secret. Whatever the commands print, from an error line to a
log line or a report, passes through :func:`redact` on its way out (see
:class:`RedactingStream`), so that no message path can leak one, however
the message was built.
"""

from __future__ import annotations

import re
from typing import Any, TextIO, cast

MASK = "***"

# Everything between "scheme://" and the last "@" before the host ends; a
# password may hold an unescaped "@" of its own.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s'\"<>]*@")
# libpq's key=value form and a URL's query parameter alike.
_PASSWORD_FIELD = re.compile(r"(?i)(?P<key>\b(?:password|passwd|pwd)\s*=\s*)(?:'[^']*'|[^\s&'\";,]+)")


def redact(text: str) -> str:
    """``text`` with the credentials of every URL and DSN in it replaced by ``***``."""
    if "@" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda match: f"{match['scheme']}{MASK}@", text)
    return _PASSWORD_FIELD.sub(lambda match: f"{match['key']}{MASK}", text)


class RedactingStream:
    """A text stream that writes everything through :func:`redact`; any other attribute is the stream's own."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(redact(text))
        # What the caller handed over counts as written, masked or not.
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def redacting(stream: TextIO) -> TextIO:
    """``stream`` behind :class:`RedactingStream`, once: a stream already behind one is returned as it is."""
    if isinstance(stream, RedactingStream):
        return cast(TextIO, stream)
    return cast(TextIO, RedactingStream(stream))
