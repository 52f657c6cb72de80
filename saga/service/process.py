"""Run ``python -m saga serve`` as a child process on a free loopback port.

For the tests, the demo and the benchmark: a real transfers service over
real HTTP, which can be killed with SIGKILL and started again on its files.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from server.process import ServerProcess


class TransfersProcess(ServerProcess):
    """One transfers service in a child process; a context manager that always stops it.

    ``services`` maps each service name to its URLs; ``db`` is the saga log
    (a SQLite file in the process's own scratch folder when not given).
    """

    def __init__(
        self,
        services: Mapping[str, str | Sequence[str]],
        *,
        db: str | Path | None = None,
        api_tokens: Mapping[str, str] | None = None,
        operator_tokens: Mapping[str, str] | None = None,
        token: str | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(token=token, extra_args=extra_args, startup_timeout=startup_timeout)
        self.services = {name: urls if isinstance(urls, str) else ",".join(urls) for name, urls in services.items()}
        self.db = db
        self.api_tokens = dict(api_tokens or {})
        self.operator_tokens = dict(operator_tokens or {})

    def command(self, fd: int, workdir: Path) -> list[str]:
        command = [sys.executable, "-m", "saga", "serve", "--fd", str(fd)]
        command += ["--db", str(self.db if self.db is not None else workdir / "saga.db")]
        for name, urls in self.services.items():
            command += ["--service", f"{name}={urls}"]
        for name, secret in self.api_tokens.items():
            command += ["--api-token", f"{name}={secret}"]
        for name, secret in self.operator_tokens.items():
            command += ["--operator-token", f"{name}={secret}"]
        if self.token is not None:
            command += ["--token", self.token]
        return command + self.extra_args
