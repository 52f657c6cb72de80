"""The accounts services' clients of one process: one connection pool, one token, and which replica to send to.

A saga's requests and the reads of balances and audit trails (saga/services.py,
saga/reconcile.py) go through the same generated client; a reader needs
these and nothing of a saga log, so it holds a :class:`ServiceClients` of
its own, and an :class:`~saga.orchestrator.Orchestrator` holds one for its
sagas.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from generated_client.accounts import AuthenticatedClient, Client
from saga.replicas import Replicas
from saga.retry import RetryPolicies
from saga.steps import AnyClient

#: Connections of a pool a caller did not size: twice an orchestrator's default concurrency.
DEFAULT_CONNECTIONS = 128


def fast_transport(max_connections: int = 256) -> httpx.AsyncBaseTransport:
    """httpx over aiohttp: httpx's own async pool collapses under concurrency (httpx #3215).

    The aiohttp session keeps no cookies: no answer of a service may change
    what a later request carries, and a jar costs a lookup per request.
    """
    import aiohttp
    from httpx_aiohttp import AiohttpTransport

    def session() -> aiohttp.ClientSession:
        # httpx's keep-alive expiry (5 s), no longer than uvicorn's own: a
        # connection the server may already have closed is not reused.
        connector = aiohttp.TCPConnector(
            limit=max_connections, keepalive_timeout=httpx.Limits().keepalive_expiry, ssl=httpx.create_ssl_context()
        )
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    return AiohttpTransport(client=session)


class LeanAsyncClient(httpx.AsyncClient):
    """An httpx client that sends each request as built, and remembers each URL it has built.

    The generated client hands every request to :meth:`build_request` with a
    path relative to the service's base URL; parsing and joining it again for
    every request is work done at start-up instead, once per path.
    :meth:`send` hands the request straight to the transport: no cookies
    (no answer may change what a later request carries), no redirects
    followed (an accounts service never redirects; a 3xx is an answer like
    any other) and no httpx auth flow (the token travels as a header set
    when the client is made).
    """

    def __init__(self, *, base_url: str, transport: httpx.AsyncBaseTransport, **options: Any) -> None:
        super().__init__(base_url=base_url, transport=transport, **options)
        self._lean_transport = transport
        self._urls: dict[str, httpx.URL] = {}

    def build_request(self, method: str, url: httpx.URL | str, **options: Any) -> httpx.Request:
        if isinstance(url, str):
            merged = self._urls.get(url)
            if merged is None:
                merged = self._urls[url] = self._merge_url(url)
            url = merged
        return super().build_request(method, url, **options)

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        if self.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        if auth is not httpx.USE_CLIENT_DEFAULT or follow_redirects not in (httpx.USE_CLIENT_DEFAULT, False):
            raise ValueError("LeanAsyncClient sends requests as built: no auth flow, no redirects followed")
        response = await self._lean_transport.handle_async_request(request)
        response.request = request
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response


def longest_request_timeout(policies: RetryPolicies) -> float:
    """Every timeout of the HTTP client, in seconds: the longest request timeout of any step.

    httpx's default caps each request at 5 seconds, below a longer
    ``request_timeout``; the step's own deadline (saga/steps.py) is the
    one meant to end a request. Balance and trail reads get the same
    allowance. The aiohttp transport takes its connect, read and pool
    timeouts from this per request, in place of its session's defaults.
    """
    return max(policy.request_timeout for policy in (policies.debit, policies.credit, policies.compensation))


class ServiceClients:
    """The generated client for each URL of every accounts service, all on one transport.

    ``transport`` is shared by every URL's client, so every request shares
    one connection pool; by default it is :func:`fast_transport` of
    ``connections``, and closed by :meth:`aclose`. ``timeout`` (seconds) is
    every request's; by default :func:`longest_request_timeout` of the
    default retry policies. ``replicas`` chooses the URL of each service for each request.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float | None = None,
        connections: int = DEFAULT_CONNECTIONS,
    ) -> None:
        self.token = token
        #: Seconds of every timeout of every request.
        self.timeout = longest_request_timeout(RetryPolicies()) if timeout is None else timeout
        self._owns_transport = transport is None
        self._transport = transport or fast_transport(max_connections=connections)
        self._clients: dict[str, AnyClient] = {}
        #: Which URL of each service each request goes to, shared by every saga and read on these clients.
        self.replicas = Replicas()

    def client_for(self, service_url: str) -> AnyClient:
        """The generated client for one URL of a service, on the shared pool."""
        client = self._clients.get(service_url)
        if client is None:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            http = LeanAsyncClient(
                base_url=service_url, transport=self._transport, headers=headers, timeout=httpx.Timeout(self.timeout)
            )
            generated: AnyClient
            if self.token:
                generated = AuthenticatedClient(base_url=service_url, token=self.token, raise_on_unexpected_status=True)
            else:
                generated = Client(base_url=service_url, raise_on_unexpected_status=True)
            client = generated.set_async_httpx_client(http)
            self._clients[service_url] = client
        return client

    async def aclose(self) -> None:
        """Close the transport, if these clients made it."""
        if self._owns_transport:
            await self._transport.aclose()

    async def __aenter__(self) -> ServiceClients:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()
