"""A slow service: a TCP proxy in front of a real one that holds chosen requests before passing them on."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType


class DelayingProxy:
    """Forwards loopback connections to ``upstream_port``, holding each request that starts with ``prefix``.

    A held request reaches the service ``delay`` seconds late, so the service
    both applies it and answers it that late; with ``hold_answers`` the
    request passes at once and its answer is held instead. Everything else
    passes at once. Hold a request for less than the service's keep-alive
    timeout (5 s): the service closes a connection idle that long. A context
    manager: the proxy runs on its own thread and event loop, and stops, with
    every connection, on exit.
    """

    def __init__(
        self, upstream_port: int, delay: float, prefix: bytes = b"POST /debit", *, hold_answers: bool = False
    ) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.prefix = prefix
        self.hold_answers = hold_answers
        self.port = 0
        #: How many requests were held.
        self.held = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="delaying-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stopping.wait()

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.close()
            return
        # Requests on one connection go one at a time: the next answer is the held request's.
        answer_held = asyncio.Event()
        await asyncio.gather(
            self._requests(client_reader, upstream_writer, answer_held),
            self._answers(upstream_reader, client_writer, answer_held),
            return_exceptions=True,
        )

    async def _requests(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, answer_held: asyncio.Event
    ) -> None:
        try:
            while data := await source.read(65_536):
                if data.startswith(self.prefix):
                    self.held += 1
                    if self.hold_answers:
                        answer_held.set()
                    else:
                        await asyncio.sleep(self.delay)
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()

    async def _answers(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, answer_held: asyncio.Event
    ) -> None:
        try:
            while data := await source.read(65_536):
                if answer_held.is_set():
                    answer_held.clear()
                    await asyncio.sleep(self.delay)
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()

    def __enter__(self) -> DelayingProxy:
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise RuntimeError("the proxy did not start")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=10)
