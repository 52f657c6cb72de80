"""``python -m saga serve``: the transfers service, and the worker that drives its sagas.

On a SQLite log this process holds the log's lock, so it serves the API and
drives every saga itself. On a PostgreSQL log any number of ``serve``
replicas and ``worker`` processes share the log; ``--no-drive`` makes a
replica that only answers the API. Killed at any point, it loses nothing:
every transfer answered 201 is in the log, and the next process that drives
the log (a restarted ``serve``, or any worker) finishes it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
from typing import Any, TextIO

import uvicorn
import uvloop

from saga.cli.options import (
    add_concurrency_option,
    add_db_option,
    add_directory_options,
    add_lease_options,
    add_output_options,
    add_retry_options,
    add_token_option,
    seconds,
    whole_number,
)
from saga.directory import directory_from
from saga.logs import SagaLogError, is_shared
from saga.orchestrator import Orchestrator
from saga.run import TransferResult
from saga.service.app import create_transfers_app
from saga.service.settings import DEFAULT_STUCK_AFTER_SECONDS, TransfersSettings
from saga.service.waiting import EndWatch
from saga.telemetry.metrics import ObservedSagaLog, SagaMetrics
from saga.worker import Worker
from server.edge import EdgeLimits, guarded_protocol, is_loopback
from server.settings import ConfigurationError, parse_named_tokens

logger = logging.getLogger("saga")

DEFAULT_PORT = 8080


class ServeError(Exception):
    """The service cannot start as asked: one line, exit 2."""


def add_serve_command(commands: Any) -> None:
    serve = commands.add_parser(
        "serve", help="the transfers service: the saga behind its HTTP contract (openapi/transfers.yaml)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=whole_number(0, 65535), default=DEFAULT_PORT, help="port (8080)")
    serve.add_argument("--fd", type=int, default=None, help="serve on this inherited, bound socket instead")
    add_db_option(serve)
    add_directory_options(serve)
    serve.add_argument(
        "--api-token",
        action="append",
        default=[],
        metavar="NAME=SECRET",
        help="a caller's bearer token, recorded by NAME with what it submits; repeat for each caller "
        "(without any, only loopback callers are served)",
    )
    serve.add_argument(
        "--operator-token",
        action="append",
        default=[],
        metavar="NAME=SECRET",
        help="an operator's bearer token: what a caller may do, plus cancel, retry and resolve, and the console's "
        "actions; actions are recorded by NAME; repeat for each operator",
    )
    serve.add_argument(
        "--stuck-after-seconds",
        type=whole_number(1, 10**7),
        default=DEFAULT_STUCK_AFTER_SECONDS,
        help=f"a saga COMPENSATING for longer than this is listed as stuck ({DEFAULT_STUCK_AFTER_SECONDS})",
    )
    add_token_option(serve)
    add_concurrency_option(serve, default=64)
    serve.add_argument(
        "--no-drive",
        action="store_true",
        help="answer the API only and leave the sagas to workers (PostgreSQL log only)",
    )
    add_lease_options(serve)
    limits = EdgeLimits()
    serve.add_argument("--max-body-bytes", type=whole_number(1, 2**31), default=limits.max_body_bytes)
    serve.add_argument("--max-header-bytes", type=whole_number(1, 2**31), default=limits.max_header_bytes)
    serve.add_argument("--header-timeout", type=seconds, default=limits.header_timeout)
    serve.add_argument("--body-timeout", type=seconds, default=limits.body_timeout)
    serve.add_argument("--keep-alive-timeout", type=seconds, default=limits.keep_alive_timeout)
    serve.add_argument("--max-connections", type=whole_number(1, 1_000_000), default=limits.max_connections)
    add_retry_options(serve)
    add_output_options(serve)


def _tokens(flags: list[str], option: str = "--api-token") -> dict[str, str]:
    try:
        return parse_named_tokens(flags, option)
    except ConfigurationError as error:
        raise ServeError(str(error)) from None


def run_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from saga.cli.running import EXIT_BAD_INPUT, UsageError

    try:
        directory = directory_from(args.service, args.services)
        if not directory:
            raise ServeError("name the accounts services requests may use: --service NAME=URL[,URL...]")
        settings = TransfersSettings(
            directory=directory,
            api_tokens=_tokens(args.api_token),
            operator_tokens=_tokens(args.operator_token, "--operator-token"),
            max_body_bytes=args.max_body_bytes,
            bank_token=args.token,
            stuck_after_seconds=args.stuck_after_seconds,
        )
        limits = EdgeLimits(
            max_body_bytes=args.max_body_bytes,
            max_header_bytes=args.max_header_bytes,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            keep_alive_timeout=args.keep_alive_timeout,
            max_connections=args.max_connections,
        )
        listener = socket.socket(fileno=args.fd) if args.fd is not None else None
        host = listener.getsockname()[0] if listener is not None else args.host
        if not settings.authenticated and not is_loopback(host):
            raise ServeError(
                f"refusing to serve on {host} without API tokens: anyone who reaches it could move money; "
                "give --api-token NAME=SECRET, or bind to a loopback address"
            )
    except (ServeError, ValueError) as error:
        print(f"error: {error}", file=err)
        return EXIT_BAD_INPUT
    try:
        # uvloop, as the accounts services run: one loop both answers the API and drives the sagas.
        return uvloop.run(_serve(args, settings, limits, listener, err))
    except (UsageError, ServeError, SagaLogError) as error:
        print(f"error: {error}", file=err)
        return EXIT_BAD_INPUT


async def _serve(
    args: argparse.Namespace,
    settings: TransfersSettings,
    limits: EdgeLimits,
    listener: socket.socket | None,
    err: TextIO,
) -> int:
    from saga.cli.options import policies_from
    from saga.cli.running import default_db, open_log

    database = default_db(args)
    shared = is_shared(database)
    drive = not args.no_drive
    if not drive and not shared:
        raise ServeError(
            "a SQLite saga log is held by one process, which must drive its sagas: --no-drive needs postgresql://"
        )
    log = await open_log(database)
    metrics = SagaMetrics()
    observed = ObservedSagaLog(log, metrics, args.worker_id)
    watch = EndWatch(observed)
    orchestrator = Orchestrator(
        observed,
        policies=policies_from(args),
        token=args.token,
        concurrency=args.concurrency,
        owner=args.worker_id,
        lease_seconds=args.lease_seconds,
        directory=settings.directory,
    )

    def finished(result: TransferResult) -> None:
        if result.state.is_terminal:
            watch.ended(result.transaction_id)

    worker = Worker(orchestrator, concurrency=args.concurrency, poll_seconds=args.poll_seconds, on_finished=finished)
    app = create_transfers_app(settings, observed, watch=watch, registry=metrics.registry)
    options: dict[str, Any] = {
        "log_config": None,
        "access_log": False,
        "http": guarded_protocol(limits),
        "timeout_keep_alive": limits.keep_alive_timeout,
        "lifespan": "off",
    }
    if listener is not None:
        server = uvicorn.Server(uvicorn.Config(app, **options))
        where = "{}:{}".format(*listener.getsockname()[:2])
    else:
        server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, **options))
        where = f"{args.host}:{args.port}"
    callers = ", ".join(sorted(settings.api_tokens)) or "none"
    if not settings.authenticated:
        callers = "none: unauthenticated calls, served on loopback only"
    operators = ", ".join(sorted(settings.operator_tokens)) or "none (no operator actions)"
    services = "; ".join(f"{name}={','.join(urls)}" for name, urls in settings.directory.to_json().items())
    print(
        f"transfers service on http://{where}, saga log {database if not shared else 'postgresql'}, "
        f"{'driving ' + str(args.concurrency) + ' sagas at a time' if drive else 'not driving sagas (--no-drive)'}; "
        f"services: {services}; API callers: {callers}; operators: {operators}",
        file=err,
        flush=True,
    )
    stop = asyncio.Event()
    driving = asyncio.create_task(worker.run(stop)) if drive else None
    try:
        await server.serve(sockets=[listener] if listener is not None else None)
    finally:
        stop.set()
        if driving is not None:
            await driving
        await watch.close()
        await orchestrator.aclose()
        await log.close()
    print(
        f"transfers service stopped: {worker.stats.claimed} sagas claimed, {worker.stats.finished} driven to an end "
        f"or a pause, {worker.stats.handed_back} handed back",
        file=err,
    )
    return 0
