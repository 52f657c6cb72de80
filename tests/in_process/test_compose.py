"""docker-compose.yml without a Docker engine: valid by the Compose Specification; every command an entry
point of the image, read by its real argument parser; every Prometheus target a service of the file, on the
port its command serves; and the rules Prometheus loads the mounted file that saga/README.md shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from saga.directory import directory_from
from server.settings import load_accounts
from server.shared.database_url import parse_database_url
from tests.in_process.test_alert_rules import RULES_FILE
from tests.support.compose import (
    COMPOSE_FILE,
    PYPROJECT,
    BindMount,
    ComposeError,
    args_of,
    bind_mounts,
    command,
    entry_point,
    interpolate,
    load,
    parse_command,
    raw_document,
    variables,
)

ROOT = COMPOSE_FILE.parent
DOCKERFILE = ROOT / "Dockerfile"
#: Each bank is two replicas over one database.
REPLICAS = {"bank-a": ("bank-a-1", "bank-a-2"), "bank-b": ("bank-b-1", "bank-b-2")}
BANK_SERVICES = tuple(name for names in REPLICAS.values() for name in names)
API_REPLICAS = ("transfers-1", "transfers-2")
WORKERS = ("transfers-worker-1", "transfers-worker-2")
INIT_SCRIPT = "/docker-entrypoint-initdb.d/"
PROMETHEUS_CONFIG = ROOT / "instances" / "compose" / "prometheus.yml"


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
    return load()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def built(services: dict[str, Any]) -> list[str]:
    """The services that run the project's image."""
    return [name for name, service in services.items() if "build" in service]


def created_databases(services: dict[str, Any]) -> set[str]:
    created = set()
    for target, mount in bind_mounts(services["postgres"]).items():
        if target.startswith(INIT_SCRIPT):
            created |= set(re.findall(r"CREATE DATABASE (\w+)", mount.source.read_text(encoding="utf-8")))
    return created


def listening_port(services: dict[str, Any], name: str) -> int:
    """The port on which the service's command serves HTTP: its API's, or a worker's metrics."""
    _, args = parse_command(services[name])
    port = args.metrics_port if getattr(args, "command", None) == "worker" else args.port
    assert isinstance(port, int), name
    return port


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


def test_the_services_are_the_database_two_replicas_per_bank_two_api_replicas_two_workers_and_prometheus(
    services: dict[str, Any],
) -> None:
    assert set(services) == {"postgres", *BANK_SERVICES, *API_REPLICAS, *WORKERS, "prometheus"}


def test_every_secret_comes_from_the_environment_with_a_placeholder_the_header_names() -> None:
    found = variables(raw_document())
    assert found
    header = COMPOSE_FILE.read_text(encoding="utf-8").split("\nname:", 1)[0]
    defaults: dict[str, set[str]] = {}
    for name, operator, default in found:
        assert operator == ":-", name
        assert "change-me" in default, name
        assert re.search(rf"^#\s+{name}\s", header, re.MULTILINE), f"the header does not name {name}"
        defaults.setdefault(name, set()).add(default)
    assert {name: len(values) for name, values in defaults.items()} == dict.fromkeys(defaults, 1)


def test_the_environment_replaces_the_placeholders() -> None:
    chosen = {"POSTGRES_PASSWORD": "pw-1", "ACCOUNTS_TOKEN": "tok-2", "PROMETHEUS_API_TOKEN": "prom-3"}
    services = load(environment=chosen)["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pw-1"
    bank = args_of(services, "bank-a-1", "accounts-service")
    assert urlsplit(bank.database).password == "pw-1"
    assert bank.token == "tok-2"
    assert "prometheus=prom-3" in args_of(services, "transfers-1", "saga", "serve").api_token
    assert load(environment=chosen)["configs"]["prometheus-api-token"]["content"] == "prom-3"
    assert "change-me" not in str(services["postgres"]) + str(command(services["bank-a-1"]))


def test_the_interpolation_refuses_a_variable_without_a_default() -> None:
    with pytest.raises(ComposeError, match="default"):
        interpolate({"password": "${POSTGRES_PASSWORD}"}, {})
    with pytest.raises(ComposeError, match="default"):
        interpolate(["${TOKEN:?required}"], {})
    assert interpolate("$${TOKEN:-x}", {}) == "${TOKEN:-x}"


# -- the image ------------------------------------------------------------------------


def test_the_projects_services_build_the_repositorys_dockerfile_tagged_with_the_projects_version(
    services: dict[str, Any],
) -> None:
    import tomllib

    version = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["version"]
    assert set(built(services)) == {*BANK_SERVICES, *API_REPLICAS, *WORKERS}
    for name in built(services):
        build = services[name]["build"]
        context = build if isinstance(build, str) else build["context"]
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (ROOT / context).resolve() == ROOT, name
        assert (ROOT / context / dockerfile).is_file(), name
        assert services[name]["image"] == f"transfer-saga:{version}", name


def test_the_other_images_are_pinned_to_an_exact_version(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if "build" in service:
            continue
        _, _, tag = service["image"].rpartition(":")
        assert re.fullmatch(r"v?[0-9]+\.[0-9]+(\.[0-9]+)?", tag), f"{name}: {service['image']}"


def test_a_command_runs_as_it_is_written_since_the_image_sets_no_entrypoint() -> None:
    directives = [line.split(maxsplit=1)[0].upper() for line in DOCKERFILE.read_text().splitlines() if line.strip()]
    assert "ENTRYPOINT" not in directives


def test_every_command_of_the_projects_image_is_an_entry_point_that_accepts_its_arguments(
    services: dict[str, Any],
) -> None:
    scripts = {name: parse_command(services[name])[0].script for name in built(services)}
    assert {scripts[name] for name in BANK_SERVICES} == {"accounts-service"}
    assert {scripts[name] for name in (*API_REPLICAS, *WORKERS)} == {"saga"}


def test_the_entry_point_check_refuses_a_command_that_is_not_an_entry_point_or_a_renamed_flag(
    services: dict[str, Any],
) -> None:
    bank = services["bank-a-1"]
    with pytest.raises(ComposeError, match=r"not a \[project\.scripts\] entry point"):
        parse_command({**bank, "command": ["python", "-m", "server", *command(bank)[1:]]})
    renamed = [word.replace("--metrics-public", "--public-metrics") for word in command(bank)]
    with pytest.raises(ComposeError, match="--public-metrics"):
        parse_command({**bank, "command": renamed})
    # A prefix parses, as argparse takes it for the flag it begins; it is refused all the same.
    abbreviated = [word.replace("--metrics-public", "--metrics-pub") for word in command(bank)]
    with pytest.raises(ComposeError, match="--metrics-pub is not a flag of accounts-service"):
        parse_command({**bank, "command": abbreviated})
    worker = services[WORKERS[0]]
    renamed = [word.replace("--metrics-host", "--metrics-address") for word in command(worker)]
    with pytest.raises(ComposeError, match="--metrics-address"):
        parse_command({**worker, "command": renamed})


def test_the_entry_points_name_the_modules_whose_parsers_read_the_commands() -> None:
    assert entry_point("accounts-service").module == "server.__main__"
    assert entry_point("saga").module == "saga.cli"


def test_every_path_a_command_reads_is_mounted_read_only_from_the_repository(services: dict[str, Any]) -> None:
    for name in built(services):
        mounts = bind_mounts(services[name])
        for word in command(services[name]):
            if "/" not in word or "://" in word:
                continue
            assert word in mounts, f"{name} reads {word}, which the image does not hold"
            assert mounts[word].read_only, name
            assert mounts[word].source.is_file(), name
            assert mounts[word].source.is_relative_to(ROOT), name


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


def test_the_banks_serve_on_port_8000_their_mounted_accounts_without_injected_faults(
    services: dict[str, Any],
) -> None:
    for bank, replicas in REPLICAS.items():
        files = set()
        for name in replicas:
            args = args_of(services, name, "accounts-service")
            assert (args.host, args.port) == ("0.0.0.0", 8000), name
            assert args.credit_fault_rate == 0, name
            assert not args.credit_fault_after_commit_rate, name
            mount: BindMount = bind_mounts(services[name])[str(args.accounts)]
            files.add(mount.source)
            assert "ports" not in services[name], f"{name} is reached through the transfers service only"
        (accounts_file,) = files
        assert accounts_file == ROOT / "instances" / "accounts" / f"{bank}.json"
        assert load_accounts(accounts_file), bank


def test_the_replicas_of_a_bank_share_one_database_and_the_banks_do_not(services: dict[str, Any]) -> None:
    databases = {}
    for bank, replicas in REPLICAS.items():
        urls = {args_of(services, name, "accounts-service").database for name in replicas}
        assert len(urls) == 1, bank
        (url,) = urls
        assert parse_database_url(url).kind == "postgresql", bank
        assert urlsplit(url).hostname == "postgres", bank
        databases[bank] = urlsplit(url).path.lstrip("/")
    assert len(set(databases.values())) == len(REPLICAS)
    assert set(databases.values()) <= created_databases(services)


def test_every_replica_has_a_name_of_its_own_and_waits_for_the_database(services: dict[str, Any]) -> None:
    names = [args_of(services, name, "accounts-service").replica_id for name in BANK_SERVICES]
    assert names == list(BANK_SERVICES)
    for name in BANK_SERVICES:
        assert services[name]["depends_on"] == {"postgres": {"condition": "service_healthy"}}, name


def test_every_bank_requires_the_one_token_the_transfers_service_and_its_workers_send(
    services: dict[str, Any],
) -> None:
    tokens = {args_of(services, name, "accounts-service").token for name in BANK_SERVICES}
    assert len(tokens) == 1
    (token,) = tokens
    assert token
    for name in (*API_REPLICAS, *WORKERS):
        assert parse_command(services[name])[1].token == token, name


def test_the_bank_health_check_asks_healthz_on_the_servers_port(services: dict[str, Any]) -> None:
    for name in BANK_SERVICES:
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD", name
        assert f"http://127.0.0.1:{listening_port(services, name)}/healthz" in " ".join(test), name


# -- the transfers service -------------------------------------------------------------


def test_two_api_replicas_and_two_workers_share_one_postgresql_saga_log(services: dict[str, Any]) -> None:
    replicas = [args_of(services, name, "saga", "serve") for name in API_REPLICAS]
    workers = [args_of(services, name, "saga", "worker") for name in WORKERS]
    databases = {args.db for args in [*replicas, *workers]}
    assert len(databases) == 1
    (database,) = databases
    assert parse_database_url(database).kind == "postgresql"
    assert urlsplit(database).hostname == "postgres"
    assert urlsplit(database).path.lstrip("/") in created_databases(services)
    bank_databases = {args_of(services, name, "accounts-service").database for name in BANK_SERVICES}
    assert database not in bank_databases
    # The API replicas only answer; the workers drive every saga.
    assert [args.no_drive for args in replicas] == [True, True]
    assert len({args.worker_id for args in workers}) == len(WORKERS)


def test_the_transfers_service_names_each_bank_with_both_its_replicas(services: dict[str, Any]) -> None:
    for name in (*API_REPLICAS, *WORKERS):
        _, args = parse_command(services[name])
        directory = directory_from(args.service, args.services)
        assert directory.names == ["bank-a", "bank-b"], name
        for bank, replicas in REPLICAS.items():
            urls = directory.urls(bank)
            assert tuple(urlsplit(url).hostname for url in urls) == replicas, name
            for url in urls:
                host = urlsplit(url).hostname
                assert host is not None
                assert urlsplit(url).port == listening_port(services, host), url


def test_the_api_replicas_listen_on_8080_need_tokens_and_are_ready_when_their_log_is(
    services: dict[str, Any],
) -> None:
    published = set()
    for name in API_REPLICAS:
        service = services[name]
        args = args_of(services, name, "saga", "serve")
        assert (args.host, args.port) == ("0.0.0.0", 8080), name
        assert {token.partition("=")[0] for token in args.api_token} == {"shop", "prometheus"}, name
        assert [token.partition("=")[0] for token in args.operator_token] == ["operator"], name
        assert f"http://127.0.0.1:{args.port}/readyz" in " ".join(service["healthcheck"]["test"]), name
        assert set(service["depends_on"]) == {"postgres", *BANK_SERVICES}, name
        (port,) = service["ports"]
        address, published_port, container_port = port.split(":")
        assert (address, container_port) == ("127.0.0.1", str(args.port)), name
        published.add(published_port)
    assert published == {"8080", "8081"}


def test_the_workers_serve_their_metrics_beyond_loopback_and_are_healthy_while_they_do(
    services: dict[str, Any],
) -> None:
    for name in WORKERS:
        args = args_of(services, name, "saga", "worker")
        assert args.metrics_host == "0.0.0.0", name
        assert args.metrics_port > 0, name
        assert f"http://127.0.0.1:{args.metrics_port}/metrics" in " ".join(services[name]["healthcheck"]["test"])
        assert "ports" not in services[name], name


# -- Prometheus ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(services: dict[str, Any]) -> dict[str, Any]:
    service = services["prometheus"]
    assert isinstance(service, dict)
    return service


@pytest.fixture(scope="module")
def prometheus_config(prometheus: dict[str, Any]) -> dict[str, Any]:
    """The configuration Prometheus reads: the file mounted where its --config.file points."""
    (config_path,) = [flag.split("=", 1)[1] for flag in prometheus["command"] if flag.startswith("--config.file=")]
    mount = bind_mounts(prometheus)[config_path]
    assert mount.read_only
    assert mount.source == PROMETHEUS_CONFIG
    document = yaml.safe_load(mount.source.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def config_files(prometheus: dict[str, Any], compose: dict[str, Any]) -> dict[str, str]:
    """The files that Compose writes into the Prometheus container from ``configs``, by their path there."""
    files = {}
    for entry in prometheus.get("configs", []):
        config = compose["configs"][entry["source"]]
        files[entry.get("target", "/" + entry["source"])] = config["content"]
    return files


def targets(prometheus_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every scrape target, with the scrape configuration that scrapes it."""
    found = {}
    for job in prometheus_config["scrape_configs"]:
        for group in job["static_configs"]:
            for target in group["targets"]:
                assert target not in found, target
                found[target] = job
    return found


def test_the_rules_prometheus_loads_are_the_mounted_file_that_the_documentation_shows(
    prometheus: dict[str, Any], prometheus_config: dict[str, Any]
) -> None:
    mounts = bind_mounts(prometheus)
    rule_files = prometheus_config["rule_files"]
    assert rule_files
    assert [mounts[path].source for path in rule_files] == [RULES_FILE]
    assert all(mounts[path].read_only for path in rule_files)


def test_prometheus_scrapes_every_process_of_the_projects_image_on_the_port_it_serves(
    services: dict[str, Any], prometheus_config: dict[str, Any]
) -> None:
    scraped = {}
    for target, job in targets(prometheus_config).items():
        host, _, port = target.rpartition(":")
        assert host in services, f"{target} is not a service of the Compose file"
        assert int(port) == listening_port(services, host), target
        assert job.get("metrics_path", "/metrics") == "/metrics", target
        assert job.get("scheme", "http") == "http", target
        scraped[host] = job["job_name"]
    assert set(scraped) == set(built(services))
    jobs = {bank: scraped[bank] for bank in BANK_SERVICES}, {api: scraped[api] for api in API_REPLICAS}
    assert [len(set(job.values())) for job in jobs] == [1, 1]


def test_prometheus_may_read_every_target_the_banks_openly_and_the_api_with_a_caller_token_of_its_own(
    services: dict[str, Any], compose: dict[str, Any], prometheus: dict[str, Any], prometheus_config: dict[str, Any]
) -> None:
    files = config_files(prometheus, compose)
    for target, job in targets(prometheus_config).items():
        host = target.rpartition(":")[0]
        point, args = parse_command(services[host])
        if point.script == "accounts-service":
            assert args.metrics_public, f"{host} would refuse Prometheus, which sends no token"
            assert "authorization" not in job, host
        elif args.command == "serve":
            authorization = job["authorization"]
            assert authorization.get("type", "Bearer") == "Bearer"
            sent = files[authorization["credentials_file"]]
            callers = {name: secret for name, _, secret in (flag.partition("=") for flag in args.api_token)}
            assert callers.get("prometheus") == sent, host
        else:
            assert args.command == "worker", host
            assert "authorization" not in job, host


def test_the_prometheus_files_hold_no_secret_and_no_variable() -> None:
    for path in (PROMETHEUS_CONFIG, RULES_FILE):
        text = path.read_text(encoding="utf-8")
        assert "${" not in text, path
        assert "change-me" not in text, path
    assert "credentials:" not in PROMETHEUS_CONFIG.read_text(encoding="utf-8")


def test_prometheus_keeps_its_data_in_a_volume_and_publishes_on_loopback_only(prometheus: dict[str, Any]) -> None:
    storage = [flag.split("=", 1)[1] for flag in prometheus["command"] if flag.startswith("--storage.tsdb.path=")]
    assert storage
    assert any(volume.split(":")[1] == storage[0] and not volume.startswith(".") for volume in prometheus["volumes"])
    assert all(port.startswith("127.0.0.1:") for port in prometheus["ports"])


def test_only_the_api_and_prometheus_are_published_and_only_on_loopback(services: dict[str, Any]) -> None:
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {*API_REPLICAS, "prometheus"}
    for name in published:
        assert all(str(port).startswith("127.0.0.1:") for port in services[name]["ports"]), name
