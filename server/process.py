"""Run ``python -m server`` as a child process on a free loopback port.

Used by the integration tests, the demo, the evaluation and the benchmark:
everything that needs a real accounts service over real HTTP.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

REPO_ROOT = Path(__file__).resolve().parent.parent


class ServerStartError(RuntimeError):
    """The child process exited or never became healthy."""


class ServerProcess:
    """One accounts service in a child process; a context manager that always stops it.

    The listening socket is bound here and handed to the child, so the port is
    known before the child starts and no other process can take it meanwhile.
    """

    def __init__(
        self,
        accounts: Mapping[str, int] | None = None,
        *,
        credit_fault_rate: float | None = 0.0,
        credit_fault_after_commit_rate: float = 0.0,
        fault_seed: int | None = None,
        token: str | None = None,
        log_level: str = "warning",
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
    ) -> None:
        self.accounts = dict(accounts) if accounts is not None else None
        self.credit_fault_rate = credit_fault_rate
        self.credit_fault_after_commit_rate = credit_fault_after_commit_rate
        self.fault_seed = fault_seed
        self.token = token
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the server is not running")
        return self._process.pid

    def command(self, fd: int, workdir: Path) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "server",
            "--fd",
            str(fd),
            "--credit-fault-after-commit-rate",
            str(self.credit_fault_after_commit_rate),
            "--log-level",
            self.log_level,
        ]
        if self.credit_fault_rate is not None:
            # None leaves the service's own default: faults on the memory database only.
            command += ["--credit-fault-rate", str(self.credit_fault_rate)]
        if self.accounts is not None:
            accounts_file = workdir / "accounts.json"
            accounts_file.write_text(json.dumps(self.accounts), encoding="utf-8")
            command += ["--accounts", str(accounts_file)]
        if self.fault_seed is not None:
            command += ["--fault-seed", str(self.fault_seed)]
        if self.token is not None:
            command += ["--token", self.token]
        return command + self.extra_args

    def start(self) -> Self:
        self._workdir = tempfile.TemporaryDirectory(prefix="accounts-service-")
        self._launch(port=0)
        return self

    def restart_after_kill(self, meanwhile: Callable[[], object] | None = None) -> Self:
        """SIGKILL the child, then start a new one on the same port, with the same options.

        What the new process remembers is what its database kept: a crash and
        a restart, as an operator's supervisor would do it. ``meanwhile`` runs
        while no process holds the database: a restore from a backup, say.
        """
        self.kill()
        if meanwhile is not None:
            meanwhile()
        self._launch(port=self.port)
        return self

    def _launch(self, port: int) -> None:
        assert self._workdir is not None
        workdir = Path(self._workdir.name)
        self._log_path = workdir / "server.log"
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", port))
            listener.listen(1024)
            self.port = listener.getsockname()[1]
            env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
            with self._log_path.open("ab") as log:
                self._process = subprocess.Popen(
                    self.command(listener.fileno(), workdir),
                    pass_fds=(listener.fileno(),),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=REPO_ROOT,
                    env=env,
                )
        finally:
            listener.close()
        try:
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_until_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.01
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServerStartError(f"server exited with {self._process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        raise ServerStartError(f"server did not become healthy within {self.startup_timeout}s:\n{self.log()}")

    def log(self) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        """SIGKILL the child: a crash, for tests that need one."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
