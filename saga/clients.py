"""The accounts services' clients of one process: one connection pool, one token, and which replica to send to.

A saga's requests and the reads of balances and audit trails (saga/services.py,
saga/reconcile.py) go through the same generated client; a reader needs
these and nothing of a saga log, so it holds a :class:`ServiceClients` of
its own, and an :class:`~saga.orchestrator.Orchestrator` holds one for its
sagas.
"""

from __future__ import annotations

from types import TracebackType

import httpx

from generated_client.accounts import AuthenticatedClient, Client
from saga.replicas import Replicas
from saga.retry import RetryPolicies
from saga.steps import AnyClient

#: Connections of a pool a caller did not size: twice an orchestrator's default concurrency.
DEFAULT_CONNECTIONS = 128


def fast_transport(max_connections: int = 256) -> httpx.AsyncBaseTransport:
    """httpx over aiohttp: httpx's own async pool collapses under concurrency (httpx #3215)."""
    from httpx_aiohttp import AiohttpTransport

    return AiohttpTransport(limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=None))


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
            http = httpx.AsyncClient(
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
