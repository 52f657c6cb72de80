"""``python -m server``: run one accounts service."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
import uvloop

from server.app import create_app
from server.edge import EdgeLimits, guarded_protocol, is_loopback
from server.settings import (
    DEMO_ACCOUNTS,
    DEMO_CREDIT_FAULT_RATE,
    ConfigurationError,
    Settings,
    load_accounts,
    parse_named_tokens,
)
from server.shared.database_url import DatabaseUrlError, parse_database_url
from server.shared.logformat import LOG_FORMATS, configure_logging
from server.stores import StoreError, open_store


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"ACCOUNTS_{name}", default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Run an accounts service. Every flag also reads an ACCOUNTS_* environment variable.",
    )
    parser.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="bind address (ACCOUNTS_HOST)")
    parser.add_argument("--port", type=int, default=int(_env("PORT", "8000") or 8000), help="port (ACCOUNTS_PORT)")
    parser.add_argument(
        "--fd", type=int, default=None, help="serve on an already bound, inherited socket instead of --host/--port"
    )
    parser.add_argument(
        "--accounts",
        type=Path,
        default=_env("FILE"),
        help='JSON object {"alice": 100000, ...} in minor units, opened where they do not exist (ACCOUNTS_FILE); '
        "default: on the memory database alice, bob and charlie with 100000 each, on a durable one none "
        "(open accounts with POST /accounts)",
    )
    fault_rate = _env("CREDIT_FAULT_RATE")
    parser.add_argument(
        "--credit-fault-rate",
        type=float,
        default=None if fault_rate is None else float(fault_rate),
        help=f"probability that /credit answers 500 before applying (ACCOUNTS_CREDIT_FAULT_RATE); default "
        f"{DEMO_CREDIT_FAULT_RATE:g} on the memory database, the demo, and 0 on a durable one",
    )
    parser.add_argument(
        "--credit-fault-after-commit-rate",
        type=float,
        default=float(_env("CREDIT_FAULT_AFTER_COMMIT_RATE", "0") or 0),
        help="probability that /credit applies and then answers 500 (ACCOUNTS_CREDIT_FAULT_AFTER_COMMIT_RATE)",
    )
    seed = _env("FAULT_SEED")
    parser.add_argument(
        "--fault-seed",
        type=int,
        default=int(seed) if seed else None,
        help="seed of the fault generator, for reproducible runs (ACCOUNTS_FAULT_SEED)",
    )
    parser.add_argument(
        "--database",
        default=_env("DATABASE", "memory"),
        help="where the ledger lives: memory (the default; forgotten on exit), sqlite:///relative.db, "
        "sqlite:////absolute.db, a bare path (SQLite), or postgresql://... (ACCOUNTS_DATABASE)",
    )
    parser.add_argument(
        "--replica-id",
        default=_env("REPLICA_ID"),
        help="this process's name in every log line (ACCOUNTS_REPLICA_ID; default HOST:PORT)",
    )
    parser.add_argument("--token", default=_env("TOKEN"), help="require Authorization: Bearer TOKEN (ACCOUNTS_TOKEN)")
    parser.add_argument(
        "--operator-token",
        action="append",
        default=[flag for flag in (_env("OPERATOR_TOKENS") or "").split(",") if flag],
        metavar="NAME=SECRET",
        help="an operator's bearer token: accepted wherever --token is, and the only one that may open an account "
        "(POST /accounts), recorded by NAME; repeat for each operator (ACCOUNTS_OPERATOR_TOKENS, comma-separated)",
    )
    defaults = EdgeLimits()
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=int(_env("MAX_BODY_BYTES", str(defaults.max_body_bytes)) or defaults.max_body_bytes),
        help=f"refuse larger bodies with 413 (ACCOUNTS_MAX_BODY_BYTES, default {defaults.max_body_bytes})",
    )
    parser.add_argument(
        "--max-header-bytes",
        type=int,
        default=int(_env("MAX_HEADER_BYTES", str(defaults.max_header_bytes)) or defaults.max_header_bytes),
        help="refuse a request whose request line and headers together are larger with 431 "
        f"(ACCOUNTS_MAX_HEADER_BYTES, default {defaults.max_header_bytes})",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=float(_env("HEADER_TIMEOUT", str(defaults.header_timeout)) or defaults.header_timeout),
        help="seconds a client has to send a request's headers, from connecting or from its last answer "
        f"(ACCOUNTS_HEADER_TIMEOUT, default {defaults.header_timeout:g})",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=float(_env("BODY_TIMEOUT", str(defaults.body_timeout)) or defaults.body_timeout),
        help=f"seconds a client has to send a body after its headers (ACCOUNTS_BODY_TIMEOUT, "
        f"default {defaults.body_timeout:g})",
    )
    parser.add_argument(
        "--keep-alive-timeout",
        type=float,
        default=float(_env("KEEP_ALIVE_TIMEOUT", str(defaults.keep_alive_timeout)) or defaults.keep_alive_timeout),
        help=f"seconds an idle keep-alive connection stays open (ACCOUNTS_KEEP_ALIVE_TIMEOUT, "
        f"default {defaults.keep_alive_timeout:g})",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=int(_env("MAX_CONNECTIONS", str(defaults.max_connections)) or defaults.max_connections),
        help="answer further connections 503 service_overloaded (ACCOUNTS_MAX_CONNECTIONS, "
        f"default {defaults.max_connections})",
    )
    parser.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="info logs one line per request (ACCOUNTS_LOG_LEVEL)",
    )
    parser.add_argument(
        "--log-format",
        default=_env("LOG_FORMAT", "json"),
        choices=LOG_FORMATS,
        help="json: every log line one JSON object with transaction_id and replica_id; text: the same, readable "
        "(ACCOUNTS_LOG_FORMAT, default json)",
    )
    parser.add_argument(
        "--metrics-public",
        action="store_true",
        default=(_env("METRICS_PUBLIC", "") or "").lower() in ("1", "true", "yes"),
        help="serve /metrics without the token even when --token is set (ACCOUNTS_METRICS_PUBLIC)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    listener = socket.socket(fileno=args.fd) if args.fd is not None else None
    host, port = listener.getsockname()[:2] if listener is not None else (args.host, args.port)
    if host in ("0.0.0.0", "::", ""):
        # Every replica bound to a wildcard would share one name; the machine's tells them apart.
        host = socket.gethostname()
    replica_id = args.replica_id or f"{host}:{port}"
    try:
        database = parse_database_url(args.database)
        limits = EdgeLimits(
            max_body_bytes=args.max_body_bytes,
            max_header_bytes=args.max_header_bytes,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            keep_alive_timeout=args.keep_alive_timeout,
            max_connections=args.max_connections,
        )
        durable = database.kind != "memory"
        # A durable ledger holds real money: no one is given any that was not asked for.
        demo_accounts = {} if durable else dict(DEMO_ACCOUNTS)
        accounts = load_accounts(args.accounts) if args.accounts else demo_accounts
        if args.credit_fault_rate is not None:
            credit_fault_rate = args.credit_fault_rate
        else:
            # The brief's 30% failing credits are the demo's; a durable ledger fails only when asked to.
            credit_fault_rate = 0.0 if durable else DEMO_CREDIT_FAULT_RATE
        settings = Settings(
            accounts=accounts,
            credit_fault_rate=credit_fault_rate,
            credit_fault_after_commit_rate=args.credit_fault_after_commit_rate,
            fault_seed=args.fault_seed,
            token=args.token or None,
            log_requests=args.log_level in ("debug", "info"),
            database=database,
            replica_id=replica_id,
            max_body_bytes=limits.max_body_bytes,
            metrics_public=args.metrics_public,
            operator_tokens=parse_named_tokens(args.operator_token),
        )
    except (ConfigurationError, DatabaseUrlError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.fd is None and not is_loopback(args.host) and settings.token is None:
        print(
            f"warning: serving on {args.host} without a token: anyone who reaches it can move money; "
            "set --token or ACCOUNTS_TOKEN",
            file=sys.stderr,
        )
    configure_logging(args.log_format, args.log_level, {"replica_id": replica_id})
    try:
        return uvloop.run(_serve(settings, limits, args, listener))
    except StoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


startup_log = logging.getLogger("server.startup")


def describe_start(settings: Settings, ledger_id: str) -> str:
    """The first line a service logs: what it serves, with what faults, and who may call it."""
    seed = "" if settings.fault_seed is None else f", seed {settings.fault_seed}"
    auth = "on (bearer token required)" if settings.token is not None else "off (any caller)"
    operators = len(settings.operator_tokens)
    return (
        f"accounts service: store {settings.database}, ledger {ledger_id}; "
        f"credit faults {settings.credit_fault_rate:g} before commit, "
        f"{settings.credit_fault_after_commit_rate:g} after commit{seed}; "
        f"auth {auth}; {operators} operator token{'' if operators == 1 else 's'}"
    )


async def _serve(
    settings: Settings, limits: EdgeLimits, args: argparse.Namespace, listener: socket.socket | None
) -> int:
    # The store is opened here, before the first request can arrive, so that an
    # unreachable database or a schema newer than this code stops the start-up
    # with one line instead of a traceback from inside the server.
    store = await open_store(settings.database, settings.accounts)
    try:
        startup_log.info(describe_start(settings, store.ledger_id))
        app = create_app(settings, store)
        options: dict[str, Any] = {
            "log_level": args.log_level,
            # uvicorn's own lines go through the root logger's formatter like every other line.
            "log_config": None,
            "access_log": False,
            "http": guarded_protocol(limits, store.ledger_id),
            "timeout_keep_alive": limits.keep_alive_timeout,
        }
        if listener is not None:
            # uvicorn's own --fd handling takes every inherited socket for a Unix
            # socket, so TCP_NODELAY is never set and each small response waits
            # out Nagle's algorithm (about 40 ms). socket(fileno=) reads the real family.
            await uvicorn.Server(uvicorn.Config(app, **options)).serve(sockets=[listener])
        else:
            await uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, **options)).serve()
    finally:
        await store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
