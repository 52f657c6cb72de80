"""The simplest transfer loop that could work, to measure the saga against.

Sequential, one ``httpx.Client``: ``POST /debit``, then ``POST /credit``, and
on any 500 from the credit one ``POST /compensate_debit``. No retries, no
log: a credit that fails is given up, and a crash in the middle loses money.
It is a yardstick, not a way to move money.

    python -m evaluation.naive_baseline --url http://127.0.0.1:8000 [--transfers 1000]
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx


@dataclass(frozen=True)
class NaiveResult:
    transfers: int
    completed: int
    seconds: float
    p50_ms: float
    p99_ms: float
    #: Each transfer's seconds, in the order they ran.
    latencies: tuple[float, ...] = field(default=(), repr=False)

    @property
    def rate(self) -> float:
        return self.transfers / self.seconds

    @property
    def completed_rate(self) -> float:
        return self.completed / self.seconds


def naive_transfers(url: str, pairs: Sequence[tuple[str, str]], amount: int = 1) -> NaiveResult:
    """Run one naive transfer per (source, target) pair, one after another."""
    latencies: list[float] = []
    completed = 0
    prefix = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=url) as client:
        started = time.perf_counter()
        for number, (source, target) in enumerate(pairs):
            began = time.perf_counter()
            headers = {"transaction_id": f"naive-{prefix}-{number}"}
            debit = client.post("/debit", json={"user_id": source, "amount": amount}, headers=headers)
            if debit.status_code == 200:
                credit = client.post("/credit", json={"user_id": target, "amount": amount}, headers=headers)
                if credit.status_code == 200:
                    completed += 1
                elif credit.status_code >= 500:
                    client.post("/compensate_debit", json={"user_id": source, "amount": amount}, headers=headers)
            latencies.append(time.perf_counter() - began)
        seconds = time.perf_counter() - started
    ordered = sorted(latencies)
    return NaiveResult(
        len(pairs),
        completed,
        seconds,
        ordered[len(ordered) // 2] * 1000,
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        tuple(latencies),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.naive_baseline", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--transfers", type=int, default=1000)
    parser.add_argument("--source", default="alice")
    parser.add_argument("--target", default="bob")
    args = parser.parse_args(argv)
    result = naive_transfers(args.url, [(args.source, args.target)] * args.transfers)
    print(
        f"naive loop: {result.rate:.1f} transfers/s, {result.completed_rate:.1f} completed/s, "
        f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
