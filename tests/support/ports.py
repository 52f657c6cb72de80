"""A loopback URL where nothing listens: a replica that is down."""

from __future__ import annotations

import socket


def dead_url() -> str:
    """The URL of a port that was just free: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
