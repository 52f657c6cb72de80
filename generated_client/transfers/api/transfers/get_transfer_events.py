from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.problem import Problem
from ...models.transfer_events import TransferEvents
from ...types import Response


def _get_kwargs(
    transaction_id: str,
) -> dict[str, Any]:

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/transfers/{transaction_id}/events".format(
            transaction_id=quote(str(transaction_id), safe=""),
        ),
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Problem | TransferEvents | None:
    if response.status_code == 200:
        response_200 = TransferEvents.from_dict(response.json())

        return response_200

    if response.status_code == 401:
        response_401 = Problem.from_dict(response.json())

        return response_401

    if response.status_code == 404:
        response_404 = Problem.from_dict(response.json())

        return response_404

    if response.status_code == 422:
        response_422 = Problem.from_dict(response.json())

        return response_422

    if response.status_code == 500:
        response_500 = Problem.from_dict(response.json())

        return response_500

    if response.status_code == 503:
        response_503 = Problem.from_dict(response.json())

        return response_503

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[Problem | TransferEvents]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    transaction_id: str,
    *,
    client: AuthenticatedClient | Client,
) -> Response[Problem | TransferEvents]:
    """The transfer's timeline, in the order the saga log recorded it.

     Every state change and every request the saga sent to an accounts
    service (an `attempt`: its step, HTTP status or error, problem code,
    latency, and the Ledger-Id that answered), every claim of the saga
    by a worker, each with the worker and the lease epoch it was written
    under, and every operator `action` (who, what, why, and the state it
    led to).

    Args:
        transaction_id (str):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | TransferEvents]
    """

    kwargs = _get_kwargs(
        transaction_id=transaction_id,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    transaction_id: str,
    *,
    client: AuthenticatedClient | Client,
) -> Problem | TransferEvents | None:
    """The transfer's timeline, in the order the saga log recorded it.

     Every state change and every request the saga sent to an accounts
    service (an `attempt`: its step, HTTP status or error, problem code,
    latency, and the Ledger-Id that answered), every claim of the saga
    by a worker, each with the worker and the lease epoch it was written
    under, and every operator `action` (who, what, why, and the state it
    led to).

    Args:
        transaction_id (str):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | TransferEvents
    """

    return sync_detailed(
        transaction_id=transaction_id,
        client=client,
    ).parsed


async def asyncio_detailed(
    transaction_id: str,
    *,
    client: AuthenticatedClient | Client,
) -> Response[Problem | TransferEvents]:
    """The transfer's timeline, in the order the saga log recorded it.

     Every state change and every request the saga sent to an accounts
    service (an `attempt`: its step, HTTP status or error, problem code,
    latency, and the Ledger-Id that answered), every claim of the saga
    by a worker, each with the worker and the lease epoch it was written
    under, and every operator `action` (who, what, why, and the state it
    led to).

    Args:
        transaction_id (str):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | TransferEvents]
    """

    kwargs = _get_kwargs(
        transaction_id=transaction_id,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    transaction_id: str,
    *,
    client: AuthenticatedClient | Client,
) -> Problem | TransferEvents | None:
    """The transfer's timeline, in the order the saga log recorded it.

     Every state change and every request the saga sent to an accounts
    service (an `attempt`: its step, HTTP status or error, problem code,
    latency, and the Ledger-Id that answered), every claim of the saga
    by a worker, each with the worker and the lease epoch it was written
    under, and every operator `action` (who, what, why, and the state it
    led to).

    Args:
        transaction_id (str):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | TransferEvents
    """

    return (
        await asyncio_detailed(
            transaction_id=transaction_id,
            client=client,
        )
    ).parsed
