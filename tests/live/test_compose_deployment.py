"""docker-compose.yml rehearsed without a Docker engine.

Every service of the project's image is started as the file starts it:
through its entry point, with its command's flags and its environment,
except that it listens on a loopback port of its own (a socket bound here,
or a worker's metrics on a free port), reaches the other services there and
keeps its databases on the test PostgreSQL server; a mounted file is read
from the repository. Each is waited for with the file's own health check.
Then a transfer is taken by one API replica, driven by a worker (the API
replicas drive nothing) and awaited on the other replica; and every target of
the file's Prometheus is scraped as Prometheus scrapes it, with the token it
would send.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from server.process import REPO_ROOT
from tests.in_process.test_alert_rules import METRIC_NAME, RULES_FILE, rules_of, series_names
from tests.support.compose import (
    ENVIRONMENT_PREFIXES,
    bind_mounts,
    command,
    environment_of,
    load,
    parse_command,
)
from tests.support.postgres import fresh_database

#: Longer than any single start on a busy machine; the file's health checks allow a minute.
START_TIMEOUT = 60.0
WORKERS = ("transfers-worker-1", "transfers-worker-2")
LISTENING = ("--host", "--port", "--metrics-host", "--metrics-port")


@dataclass
class Rehearsal:
    """The services started, and where each one listens: ``host:port`` in the file -> ``127.0.0.1:port``."""

    workdir: Path
    compose: dict[str, Any]
    addresses: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def url(self, address: str, path: str = "") -> str:
        return f"http://{self.addresses[address]}{path}"

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(encoding="utf-8", errors="replace")


def is_worker(args: argparse.Namespace) -> bool:
    return getattr(args, "command", None) == "worker"


def address_in_file(name: str, args: argparse.Namespace) -> str:
    """Where the file's other services reach ``name``: its API, or a worker's metrics."""
    return f"{name}:{args.metrics_port if is_worker(args) else args.port}"


def entry_point_command(script: str, module: str, function: str) -> list[str]:
    """What the console script the package installs runs: ``function`` with argv[0] its name."""
    code = f"import sys; from {module} import {function}; sys.argv[0] = {script!r}; sys.exit({function}())"
    return [sys.executable, "-c", code]


def local_words(words: list[str], replacements: dict[str, str]) -> list[str]:
    """``words`` without where they listen, each replacement made in every word."""
    kept = [word for index, word in enumerate(words) if word not in LISTENING and words[index - 1] not in LISTENING]
    for old, new in sorted(replacements.items(), key=lambda item: -len(item[0])):
        kept = [word.replace(old, new) for word in kept]
    return kept


def bound_socket() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    return listener


def healthy(check: list[str], address: str, local: str) -> bool:
    kind, program, *arguments = check
    assert (kind, program) == ("CMD", "python")
    local_check = [argument.replace(f"127.0.0.1:{address.rpartition(':')[2]}", local) for argument in arguments]
    return subprocess.run([sys.executable, *local_check], capture_output=True, check=False).returncode == 0


def wait_until_healthy(rehearsal: Rehearsal, name: str, address: str) -> None:
    service = rehearsal.compose["services"][name]
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        process = rehearsal.processes[name]
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode}:\n{rehearsal.log(name)}")
        if address not in rehearsal.addresses:
            # A worker's metrics listen on a free port that it names on its first line.
            match = re.search(r"metrics at http://([0-9.:]+)/metrics", rehearsal.log(name))
            if match:
                rehearsal.addresses[address] = match.group(1)
        if address in rehearsal.addresses and healthy(
            service["healthcheck"]["test"], address, rehearsal.addresses[address]
        ):
            return
        time.sleep(0.2)
    pytest.fail(f"{name} did not pass its health check within {START_TIMEOUT}s:\n{rehearsal.log(name)}")


def start(rehearsal: Rehearsal, name: str, replacements: dict[str, str]) -> None:
    service = rehearsal.compose["services"][name]
    point, args = parse_command(service)
    words = command(service)
    listener = None if is_worker(args) else bound_socket()
    extra = ["--fd", str(listener.fileno())] if listener else ["--metrics-host", "127.0.0.1", "--metrics-port", "0"]
    if listener is not None:
        rehearsal.addresses[address_in_file(name, args)] = f"127.0.0.1:{listener.getsockname()[1]}"
    environment = {
        variable: value for variable, value in os.environ.items() if not variable.startswith(ENVIRONMENT_PREFIXES)
    }
    environment |= environment_of(service) | {"PYTHONPATH": str(REPO_ROOT)}
    argv = entry_point_command(point.script, point.module, point.function)
    local = [*argv, *local_words(words[1:], replacements), *extra]
    try:
        with (rehearsal.workdir / f"{name}.log").open("wb") as log:
            rehearsal.processes[name] = subprocess.Popen(
                local,
                pass_fds=(listener.fileno(),) if listener else (),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=rehearsal.workdir,
                env=environment,
            )
    finally:
        if listener is not None:
            listener.close()


def stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    for process in processes.values():
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rehearsal]:
    compose = load()
    services = compose["services"]
    built = [name for name, service in services.items() if "build" in service]
    rehearsal = Rehearsal(tmp_path_factory.mktemp("compose"), compose)
    with contextlib.ExitStack() as stack:
        databases = {
            url: stack.enter_context(fresh_database("compose"))
            for url in sorted({url for name in built for url in database_urls(services[name])})
        }
        stack.callback(stop, rehearsal.processes)
        # The banks first, then what calls them; each started once the ones before it are healthy.
        order = sorted(built, key=lambda name: parse_command(services[name])[0].script != "accounts-service")
        for name in order:
            address = address_in_file(name, parse_command(services[name])[1])
            mounted = {target: str(mount.source) for target, mount in bind_mounts(services[name]).items()}
            start(rehearsal, name, {**databases, **mounted, **rehearsal.addresses})
            wait_until_healthy(rehearsal, name, address)
        yield rehearsal


def database_urls(service: dict[str, Any]) -> list[str]:
    return [word for word in command(service) if word.startswith("postgresql://")]


def test_a_transfer_taken_by_one_api_replica_is_driven_by_a_worker_and_seen_ending_on_the_other(
    rehearsal: Rehearsal,
) -> None:
    services = rehearsal.compose["services"]
    _, api = parse_command(services["transfers-1"])
    caller = dict(token.partition("=")[::2] for token in api.api_token)["shop"]
    headers = {"Authorization": f"Bearer {caller}"}
    body = {"source": {"service": "bank-a", "user_id": "alice"}, "target": {"service": "bank-b", "user_id": "charlie"}}
    with httpx.Client(timeout=45) as client:
        taken = client.post(
            rehearsal.url("transfers-1:8080", "/transfers"),
            json={**body, "amount": 2500},
            headers={**headers, "Idempotency-Key": f"compose-{uuid.uuid4()}"},
        )
        assert taken.status_code == 201, taken.text
        transaction_id = taken.json()["transaction_id"]
        ended = client.get(
            rehearsal.url("transfers-2:8080", f"/transfers/{transaction_id}"), params={"wait": 30}, headers=headers
        )
        assert ended.json()["state"] == "COMPLETED", ended.text
        token = parse_command(services["bank-a-1"])[1].token
        bank_headers = {"Authorization": f"Bearer {token}", "transaction_id": "compose-rehearsal"}
        events = client.get(
            rehearsal.url("transfers-2:8080", f"/transfers/{transaction_id}/events"), headers=headers
        ).json()["events"]
        source = client.get(rehearsal.url("bank-a-2:8000", "/accounts/alice"), headers=bank_headers).json()
        target = client.get(rehearsal.url("bank-b-2:8000", "/accounts/charlie"), headers=bank_headers).json()
    assert (source["balance"], target["balance"]) == (100000 - 2500, 100000 + 2500)
    # Every write the saga's driving made carries the worker that held it: only the workers drive.
    writers = {event["worker"] for event in events if event["kind"] != "action"} - {None}
    assert writers, events
    assert writers <= {parse_command(services[name])[1].worker_id for name in WORKERS}, writers


def test_every_prometheus_target_answers_with_what_the_rules_name(rehearsal: Rehearsal) -> None:
    compose = rehearsal.compose
    prometheus = compose["services"]["prometheus"]
    mounts = bind_mounts(prometheus)
    config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].source.read_text(encoding="utf-8"))
    tokens = {entry["target"]: compose["configs"][entry["source"]]["content"] for entry in prometheus["configs"]}
    scraped: set[str] = set()
    with httpx.Client(timeout=10) as client:
        for job in config["scrape_configs"]:
            headers = {}
            if "authorization" in job:
                headers["Authorization"] = f"Bearer {tokens[job['authorization']['credentials_file']]}"
            for group in job["static_configs"]:
                for target in group["targets"]:
                    answer = client.get(rehearsal.url(target, job.get("metrics_path", "/metrics")), headers=headers)
                    assert answer.status_code == 200, f"{job['job_name']} {target}: {answer.status_code}"
                    scraped |= series_names(answer.text)
    named = {
        name for rule in rules_of(RULES_FILE.read_text(encoding="utf-8")) for name in METRIC_NAME.findall(rule["expr"])
    }
    assert named <= scraped, sorted(named - scraped)
    assert {"accounts_requests_total", "transfers_api_requests_total", "saga_claims_total"} <= scraped
