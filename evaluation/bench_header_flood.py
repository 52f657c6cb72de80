"""A normal read's latency on an accounts service at rest and while clients stream endless headers.

    python -m evaluation.bench_header_flood [--clients 16] [--requests 1000] [--seconds 30]
        [--max-header-bytes N] [--out DIR]

One accounts service (memory store, no faults) in a child process. p50 and
p99 of ``GET /accounts`` over one keep-alive connection, first at rest, then
while ``--clients`` connections stream a header that never ends, each one
reconnecting as soon as the service cuts it off, so that the flood never
lets up. The flooding clients run in a process of their own, so that their
sending does not slow the measuring client. Also reported: the service's
resident memory at rest and at its peak during the flood, and how the
flooding connections ended.

``--max-header-bytes 2147483648`` shows the service as it was without a
header limit (each phase then stops after ``--seconds``).

Writes DIR/bench-header-flood.json and prints the numbers and their ratios.
This is a benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx

from server.process import REPO_ROOT, ServerProcess

ACCOUNTS = {f"user{i}": 100_000 for i in range(10)}
CHUNK = b"f" * 65536
TICKS = os.sysconf("SC_CLK_TCK")


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def flood_one(port: int, stop: Event, connections: Synchronized[int], answered: Synchronized[int]) -> None:
    """One client: stream a header until the service cuts the connection off, then connect again."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
                connection.sendall(b"GET /accounts HTTP/1.1\r\nHost: x\r\nX-Flood: ")
                try:
                    while not stop.is_set():
                        connection.sendall(CHUNK)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                with connections.get_lock():
                    connections.value += 1
                try:
                    if connection.recv(64).startswith(b"HTTP/1.1 431"):
                        with answered.get_lock():
                            answered.value += 1
                except OSError:
                    pass
        except OSError:
            # A refused or timed-out connect: the flood goes on.
            time.sleep(0.01)


def flood(port: int, clients: int, stop: Event, connections: Synchronized[int], answered: Synchronized[int]) -> None:
    threads = [
        threading.Thread(target=flood_one, args=(port, stop, connections, answered), daemon=True)
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def read_latencies(
    client: httpx.Client, requests: int, seconds: float, on_sample: Callable[[], None] | None = None
) -> list[float]:
    """Milliseconds of each of up to ``requests`` reads, taken one after another for at most ``seconds``."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    for number in range(requests):
        started = time.perf_counter()
        answer = client.get("/accounts", headers={"transaction_id": f"bench-{number}"})
        latencies.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"a normal read was answered {answer.status_code}: {answer.text}")
        if on_sample is not None:
            on_sample()
        if time.monotonic() > deadline:
            break
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.bench_header_flood", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--clients", type=int, default=16, help="connections streaming endless headers (16)")
    parser.add_argument("--requests", type=int, default=1000, help="normal reads timed in each phase (1000)")
    parser.add_argument("--seconds", type=float, default=30.0, help="longest a phase may take (30)")
    parser.add_argument("--max-header-bytes", type=int, default=None, help="passed to the service (its default)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "evaluation" / "bench-results")
    args = parser.parse_args(argv)
    extra = ["--max-header-bytes", str(args.max_header_bytes)] if args.max_header_bytes is not None else []
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    connections = context.Value("q", 0)
    answered = context.Value("q", 0)
    with ServerProcess(ACCOUNTS, extra_args=extra) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        read_latencies(client, 200, args.seconds)
        cpu, started = cpu_seconds(server.pid), time.monotonic()
        at_rest = read_latencies(client, args.requests, args.seconds)
        rest_cpu = (cpu_seconds(server.pid) - cpu) / (time.monotonic() - started)
        idle = resident_bytes(server.pid)
        peak = idle
        flooder = context.Process(
            target=flood, args=(server.port, args.clients, stop, connections, answered), daemon=True
        )
        flooder.start()
        try:
            # Let every flooding client connect and start streaming first.
            time.sleep(1.0)

            def sample() -> None:
                nonlocal peak
                peak = max(peak, resident_bytes(server.pid))

            cpu, started = cpu_seconds(server.pid), time.monotonic()
            flooded = read_latencies(client, args.requests, args.seconds, sample)
            flood_cpu = (cpu_seconds(server.pid) - cpu) / (time.monotonic() - started)
            sample()
        finally:
            stop.set()
            flooder.join(timeout=15)
            if flooder.is_alive():
                flooder.kill()
    rest_p50, rest_p99 = quantile(at_rest, 0.5), quantile(at_rest, 0.99)
    flood_p50, flood_p99 = quantile(flooded, 0.5), quantile(flooded, 0.99)
    mib = 1024 * 1024
    limit = args.max_header_bytes if args.max_header_bytes is not None else "default (16384)"
    lines = [
        f"GET /accounts, one keep-alive connection; {args.clients} clients streaming endless headers; "
        f"--max-header-bytes {limit}; cores: {os.cpu_count()}",
        f"{'':<26}{'p50 ms':>10}{'p99 ms':>10}{'reads':>8}{'service CPU':>13}",
        f"{'at rest':<26}{rest_p50:>10.2f}{rest_p99:>10.2f}{len(at_rest):>8}{rest_cpu:>12.0%}",
        f"{'during the flood':<26}{flood_p50:>10.2f}{flood_p99:>10.2f}{len(flooded):>8}{flood_cpu:>12.0%}",
        f"{'ratio (flood / rest)':<26}{flood_p50 / rest_p50:>10.2f}{flood_p99 / rest_p99:>10.2f}",
        f"service resident memory: {idle / mib:.1f} MiB at rest, {peak / mib:.1f} MiB at the flood's peak "
        f"(+{(peak - idle) / mib:.1f} MiB)",
        f"flooding connections cut off: {connections.value}, of which {answered.value} read a 431 first",
    ]
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "clients": args.clients,
        "max_header_bytes": args.max_header_bytes,
        "at_rest_ms": {"p50": round(rest_p50, 3), "p99": round(rest_p99, 3), "reads": len(at_rest)},
        "flood_ms": {"p50": round(flood_p50, 3), "p99": round(flood_p99, 3), "reads": len(flooded)},
        "ratio": {"p50": round(flood_p50 / rest_p50, 2), "p99": round(flood_p99 / rest_p99, 2)},
        "resident_bytes": {"at_rest": idle, "flood_peak": peak},
        "service_cpu_share": {"at_rest": round(rest_cpu, 2), "flood": round(flood_cpu, 2)},
        "flood_connections_cut_off": connections.value,
        "flood_connections_answered_431": answered.value,
        "cores": os.cpu_count(),
    }
    (args.out / "bench-header-flood.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
