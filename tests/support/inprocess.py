"""An in-process client for unit tests of the HTTP adapter (no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI


@asynccontextmanager
async def asgi_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://accounts.test") as client:
        yield client


def ledger_call(transaction_id: str, user_id: str = "alice", amount: int = 100) -> dict[str, Any]:
    return {"headers": {"transaction_id": transaction_id}, "json": {"user_id": user_id, "amount": amount}}
