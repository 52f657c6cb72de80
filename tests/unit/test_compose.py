"""docker-compose.yml without a Docker engine: valid by the Compose Specification,
and everything it runs exists in this repository and accepts the flags it is given."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from saga.replicas import parse_urls
from server.__main__ import build_parser as server_parser
from server.database_url import parse_database_url
from server.settings import DEMO_ACCOUNTS, load_accounts
from tests.conftest import StartServer
from tests.contract.run_schemathesis import build_parser as contract_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
#: Each bank is two replicas over one database.
REPLICAS = {"bank-a": ("bank-a-1", "bank-a-2"), "bank-b": ("bank-b-1", "bank-b-2")}
BANK_SERVICES = tuple(name for names in REPLICAS.values() for name in names)
TRANSFERS_REPLICAS = ("transfers-1", "transfers-2")
INIT_SCRIPT = "/docker-entrypoint-initdb.d/"


def check_compose_spec(path: Path) -> subprocess.CompletedProcess[str]:
    """Validate with the Compose Specification schema vendored in the pinned check-jsonschema."""
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def workdir() -> str:
    """The image's working folder: the last stage's, where the relative paths of a command resolve."""
    directives = [line.split() for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()]
    return [words[1] for words in directives if words[:1] == ["WORKDIR"]][-1]


def in_repo(container_path: str) -> Path:
    """The repository file a command reads at ``container_path``: WORKDIR stands for the repository's root."""
    root = workdir().rstrip("/") + "/"
    relative = container_path.removeprefix(root) if container_path.startswith("/") else container_path
    assert not relative.startswith("/"), f"{container_path} is not inside the image's copy of the repository"
    return ROOT / relative


def command(service: dict[str, Any]) -> list[str]:
    value = service["command"]
    return shlex.split(value) if isinstance(value, str) else [str(word) for word in value]


def server_args(service: dict[str, Any]) -> Any:
    words = command(service)
    assert words[:3] == ["python", "-m", "server"]
    return server_parser().parse_args(words[3:])


def token_of(service: dict[str, Any]) -> str:
    words = command(service)
    return words[words.index("--token") + 1]


# -- the file itself ----------------------------------------------------------------


def test_the_compose_file_is_valid_by_the_compose_specification() -> None:
    result = check_compose_spec(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validation_catches_a_misspelt_key(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text(encoding="utf-8").replace("healthcheck:", "helthcheck:", 1))
    result = check_compose_spec(broken)
    assert result.returncode == 1
    assert "helthcheck" in result.stdout


def test_the_services_are_the_database_two_replicas_per_bank_the_saga_the_contract_run_and_the_transfers_service(
    services: dict[str, Any],
) -> None:
    assert set(services) == {"postgres", *BANK_SERVICES, "saga", "contract", *TRANSFERS_REPLICAS, "transfers-worker"}


# -- the image ------------------------------------------------------------------------


def test_every_service_but_the_database_is_built_from_the_repositorys_dockerfile(services: dict[str, Any]) -> None:
    assert "build" not in services["postgres"]
    assert services["postgres"]["image"].startswith("postgres:")
    for name, service in services.items():
        if name == "postgres":
            continue
        build = service["build"]
        context = build if isinstance(build, str) else build["context"]
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (ROOT / context).resolve() == ROOT, name
        assert (ROOT / context / dockerfile).is_file(), name


def test_the_image_installs_the_package_on_its_pinned_runtime_alone() -> None:
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    image = dockerfile.split("\nFROM ")[-1]
    assert '["project"]["dependencies"]' in image
    assert "pip install --no-deps /wheels/*.whl" in image
    # The repository is copied into the wheel's build stage only, and the dev group never reaches the image.
    assert "COPY . " not in image
    assert "requirements.txt" not in dockerfile
    assert image.rstrip().splitlines()[-1] == 'CMD ["accounts-service", "--host", "0.0.0.0", "--port", "8000"]'
    dockerignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert {".venv", ".git"} <= set(dockerignore)


# -- the banks ------------------------------------------------------------------------


def test_the_banks_run_the_server_on_port_8000_with_their_share_of_the_demo_accounts(
    services: dict[str, Any],
) -> None:
    assert (ROOT / "server" / "__main__.py").is_file()
    shares = {}
    for bank, replicas in REPLICAS.items():
        (share,) = {str(server_args(services[name]).accounts) for name in replicas}
        for name in replicas:
            args = server_args(services[name])
            assert (args.host, args.port) == ("0.0.0.0", 8000), name
        shares[bank] = load_accounts(in_repo(share))
    assert not set(shares["bank-a"]) & set(shares["bank-b"])
    assert {**shares["bank-a"], **shares["bank-b"]} == dict(DEMO_ACCOUNTS)


def test_the_replicas_of_a_bank_share_one_database_and_the_banks_do_not(services: dict[str, Any]) -> None:
    databases = {}
    for bank, replicas in REPLICAS.items():
        urls = {server_args(services[name]).database for name in replicas}
        assert len(urls) == 1, bank
        (url,) = urls
        parsed = parse_database_url(url)
        assert parsed.kind == "postgresql", bank
        assert urlsplit(url).hostname == "postgres", bank
        databases[bank] = urlsplit(url).path.lstrip("/")
    assert len(set(databases.values())) == len(REPLICAS)
    created = set()
    for volume in services["postgres"]["volumes"]:
        source, target, *_ = volume.split(":")
        if target.startswith(INIT_SCRIPT):
            created |= set(re.findall(r"CREATE DATABASE (\w+)", (ROOT / source).read_text(encoding="utf-8")))
    assert set(databases.values()) <= created


def test_every_replica_has_a_name_of_its_own_and_waits_for_the_database(services: dict[str, Any]) -> None:
    names = [services[name]["environment"]["ACCOUNTS_REPLICA_ID"] for name in BANK_SERVICES]
    assert names == list(BANK_SERVICES)
    for name in BANK_SERVICES:
        assert services[name]["depends_on"] == {"postgres": {"condition": "service_healthy"}}, name


def test_every_bank_requires_the_one_token_the_saga_and_the_contract_run_send(services: dict[str, Any]) -> None:
    tokens = {services[name]["environment"]["ACCOUNTS_TOKEN"] for name in BANK_SERVICES}
    assert len(tokens) == 1
    (token,) = tokens
    assert token
    assert token_of(services["saga"]) == token
    assert token_of(services["contract"]) == token


def test_the_bank_health_check_asks_healthz_on_the_servers_port(services: dict[str, Any]) -> None:
    for name in BANK_SERVICES:
        test = services[name]["healthcheck"]["test"]
        port = server_args(services[name]).port
        assert test[0] == "CMD", name
        assert f"http://127.0.0.1:{port}/healthz" in " ".join(test), name


def test_the_bank_health_check_passes_on_a_live_server_and_fails_without_one(
    services: dict[str, Any], start_server: StartServer
) -> None:
    _, python, *arguments = services["bank-a-1"]["healthcheck"]["test"]
    assert python == "python"
    server = start_server(token="s3cret")
    healthy = [argument.replace("http://127.0.0.1:8000", server.url) for argument in arguments]
    assert subprocess.run([sys.executable, *healthy], capture_output=True, check=False).returncode == 0
    server.stop()
    assert subprocess.run([sys.executable, *healthy], capture_output=True, check=False).returncode != 0


def test_a_bank_serves_its_accounts_file_and_requires_the_token(
    services: dict[str, Any], start_server: StartServer
) -> None:
    bank = services["bank-a-1"]
    token = bank["environment"]["ACCOUNTS_TOKEN"]
    accounts_file = in_repo(str(server_args(bank).accounts))
    server = start_server(token=token, extra_args=["--accounts", str(accounts_file)])
    headers = {"transaction_id": "compose-check"}
    with httpx.Client(base_url=server.url) as client:
        refused = client.get("/accounts", headers=headers)
        listing = client.get("/accounts", headers={**headers, "Authorization": f"Bearer {token}"})
    assert refused.status_code == 401
    assert {account["user_id"]: account["balance"] for account in listing.json()["accounts"]} == load_accounts(
        accounts_file
    )


# -- the saga and the contract run ------------------------------------------------


def urls_of(words: list[str], *flags: str) -> list[str]:
    return [words[words.index(flag) + 1] for flag in flags]


def assert_names_a_bank(url: str, services: dict[str, Any]) -> None:
    parts = urlsplit(url)
    assert parts.hostname in BANK_SERVICES, url
    assert parts.port == server_args(services[parts.hostname]).port, url


def test_the_saga_runs_a_batch_from_bank_a_to_bank_b_with_flags_it_accepts(services: dict[str, Any]) -> None:
    saga = services["saga"]
    words = command(saga)
    assert words[:4] == ["python", "-m", "saga", "batch"]
    assert (ROOT / "saga" / "__main__.py").is_file()
    usage = subprocess.run(
        [sys.executable, "-m", "saga", "batch", "--help"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    flags = [word for word in words[4:] if word.startswith("--")]
    assert flags
    assert [flag for flag in flags if flag not in usage] == []
    source, target = urls_of(words, "--source-url", "--target-url")
    source_urls, target_urls = parse_urls(source), parse_urls(target)
    assert tuple(urlsplit(url).hostname for url in source_urls) == REPLICAS["bank-a"]
    assert tuple(urlsplit(url).hostname for url in target_urls) == REPLICAS["bank-b"]
    for url in (*source_urls, *target_urls):
        assert_names_a_bank(url, services)
    assert {name: condition["condition"] for name, condition in saga["depends_on"].items()} == dict.fromkeys(
        BANK_SERVICES, "service_healthy"
    )
    (database,) = urls_of(words, "--db")
    mounts = {volume.split(":")[1] for volume in saga["volumes"]}
    assert str(Path(database).parent) in mounts


def test_the_contract_run_tests_bank_a_after_the_saga_with_flags_it_accepts(services: dict[str, Any]) -> None:
    contract = services["contract"]
    words = command(contract)
    assert words[0] == "python"
    script = in_repo(words[1])
    assert script == ROOT / "tests" / "contract" / "run_schemathesis.py"
    assert script.is_file()
    args = contract_parser().parse_args(words[2:])
    assert_names_a_bank(args.url, services)
    assert urlsplit(args.url).hostname == "bank-a-1"
    assert contract["depends_on"] == {
        "bank-a-1": {"condition": "service_healthy"},
        "saga": {"condition": "service_completed_successfully"},
    }


# -- the transfers service -------------------------------------------------------------


def saga_args(service: dict[str, Any], subcommand: str) -> Any:
    from saga.cli import build_parser as saga_parser

    words = command(service)
    assert words[:4] == ["python", "-m", "saga", subcommand]
    return saga_parser().parse_args(words[3:])


def test_two_transfers_replicas_and_a_worker_share_one_postgresql_saga_log(services: dict[str, Any]) -> None:
    replicas = [saga_args(services[name], "serve") for name in TRANSFERS_REPLICAS]
    worker = saga_args(services["transfers-worker"], "worker")
    databases = {args.db for args in [*replicas, worker]}
    assert len(databases) == 1
    (database,) = databases
    assert parse_database_url(database).kind == "postgresql"
    assert urlsplit(database).hostname == "postgres"
    created = set()
    for volume in services["postgres"]["volumes"]:
        source, target, *_ = volume.split(":")
        if target.startswith(INIT_SCRIPT):
            created |= set(re.findall(r"CREATE DATABASE (\w+)", (ROOT / source).read_text(encoding="utf-8")))
    assert urlsplit(database).path.lstrip("/") in created
    assert [args.no_drive for args in replicas] == [False, True]


def test_the_transfers_service_names_each_bank_with_both_its_replicas(services: dict[str, Any]) -> None:
    from saga.directory import directory_from

    for name in (*TRANSFERS_REPLICAS, "transfers-worker"):
        args = saga_args(services[name], "serve" if name != "transfers-worker" else "worker")
        directory = directory_from(args.service, args.services)
        assert directory.names == ["bank-a", "bank-b"], name
        for bank, replicas in REPLICAS.items():
            urls = directory.urls(bank)
            assert tuple(urlsplit(url).hostname for url in urls) == replicas, name
            for url in urls:
                assert_names_a_bank(url, services)
        assert args.token == token_of(services["saga"]), name


def test_the_transfers_replicas_listen_on_8080_need_an_api_token_and_are_ready_when_their_log_is(
    services: dict[str, Any],
) -> None:
    published = set()
    for name in TRANSFERS_REPLICAS:
        service = services[name]
        args = saga_args(service, "serve")
        assert (args.host, args.port) == ("0.0.0.0", 8080), name
        assert args.api_token, name
        assert f"http://127.0.0.1:{args.port}/readyz" in " ".join(service["healthcheck"]["test"]), name
        assert set(service["depends_on"]) == {"postgres", *BANK_SERVICES}, name
        (port,) = service["ports"]
        published.add(port.rsplit(":", 2)[-2])
    assert published == {"8080", "8081"}
