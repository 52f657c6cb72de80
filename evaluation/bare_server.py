"""A bare ASGI app answering a fixed JSON body, served exactly as ``python -m server`` serves the real one.

The benchmark compares the real /debit against this, under the same server
and client settings, to price the framework and the ledger.
"""

from __future__ import annotations

import argparse
import socket

import uvicorn
from starlette.types import Receive, Scope, Send

BODY = b'{"transaction_id":"t","operation":"debit","user_id":"alice","amount":1,"balance":1,"outcome":"applied"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    # Drain the request body, as a real endpoint must.
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--log-level", default="warning")
    args, _ = parser.parse_known_args()
    # As in server/__main__.py: socket(fileno=) keeps the TCP family, and so TCP_NODELAY.
    listener = socket.socket(fileno=args.fd)
    uvicorn.Server(uvicorn.Config(bare_app, log_level=args.log_level, access_log=False)).run(sockets=[listener])


if __name__ == "__main__":
    main()
