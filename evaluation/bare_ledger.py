"""The smallest accounts service the brief asks for: four ledger routes over a dict, and nothing else.

FastAPI, no middleware, no faults, no store but a dict of balances and a
dict of the transaction ids already processed. It answers the contract's
shapes (``LedgerRequest`` in, ``LedgerResult`` out), so the generated client
parses its answers, and a repeated (operation, transaction_id) is answered
200 with the first answer and changes nothing. The benchmark's ceiling and
naive loop run against it: what the simplest service costs, to price the
saga and the real service against.

    python -m evaluation.bare_ledger --fd FD [--accounts FILE]
"""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, StrictInt

#: What each compensation undoes.
UNDOES = {"compensate_debit": "debit", "compensate_credit": "credit"}
#: How each operation moves a balance.
SIGN = {"debit": -1, "credit": 1, "compensate_debit": 1, "compensate_credit": -1}

TransactionId = Annotated[str, Header(alias="transaction_id", convert_underscores=False, min_length=1)]


class LedgerRequest(BaseModel):
    user_id: str
    amount: StrictInt


def refusal(status: int, code: str, transaction_id: str) -> JSONResponse:
    return JSONResponse({"code": code, "transaction_id": transaction_id}, status_code=status)


def bare_ledger_app(accounts: Mapping[str, int]) -> FastAPI:
    """The app over a copy of ``accounts``; every answer it gave is kept under (operation, transaction_id)."""
    balances = dict(accounts)
    processed: dict[tuple[str, str], dict[str, Any]] = {}
    app = FastAPI()

    def apply(operation: str, transaction_id: str, body: LedgerRequest) -> dict[str, Any] | JSONResponse:
        answered = processed.get((operation, transaction_id))
        if answered is not None:
            return answered
        if body.user_id not in balances:
            return refusal(404, "unknown_user", transaction_id)
        if body.amount <= 0:
            return refusal(422, "invalid_amount", transaction_id)
        undone = UNDOES.get(operation)
        # A compensation finding nothing to undo only records itself, so a late original stays undone.
        moves = undone is None or (undone, transaction_id) in processed
        balance = balances[body.user_id] + (SIGN[operation] * body.amount if moves else 0)
        if balance < 0:
            return refusal(409, "insufficient_funds", transaction_id)
        balances[body.user_id] = balance
        outcome = "applied" if undone is None else "reversed" if moves else "voided"
        answer = {
            "transaction_id": transaction_id,
            "operation": operation,
            "user_id": body.user_id,
            "amount": body.amount,
            "balance": balance,
            "outcome": outcome,
        }
        processed[(operation, transaction_id)] = answer
        return answer

    def route(operation: str) -> Callable[[LedgerRequest, str], Awaitable[Any]]:
        async def endpoint(body: LedgerRequest, transaction_id: TransactionId) -> Any:
            return apply(operation, transaction_id, body)

        return endpoint

    for operation in SIGN:
        app.add_api_route(f"/{operation}", route(operation), methods=["POST"], response_model=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--accounts", type=Path, help="a JSON object of user_id to opening balance")
    parser.add_argument("--log-level", default="warning")
    args, _ = parser.parse_known_args()
    accounts = json.loads(args.accounts.read_text(encoding="utf-8")) if args.accounts else {}
    # As in server/__main__.py: socket(fileno=) keeps the TCP family, and so TCP_NODELAY.
    listener = socket.socket(fileno=args.fd)
    app = bare_ledger_app(accounts)
    uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, access_log=False)).run(sockets=[listener])


if __name__ == "__main__":
    main()
