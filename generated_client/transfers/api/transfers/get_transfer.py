from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.problem import Problem
from ...models.transfer import Transfer
from ...types import UNSET, Response, Unset


def _get_kwargs(
    transaction_id: str,
    *,
    wait: int | Unset = 0,
) -> dict[str, Any]:

    params: dict[str, Any] = {}

    params["wait"] = wait

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/transfers/{transaction_id}".format(
            transaction_id=quote(str(transaction_id), safe=""),
        ),
        "params": params,
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Problem | Transfer | None:
    if response.status_code == 200:
        response_200 = Transfer.from_dict(response.json())

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
) -> Response[Problem | Transfer]:
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
    wait: int | Unset = 0,
) -> Response[Problem | Transfer]:
    """One transfer; with `wait`, once it has ended or the time is up.

     With `wait=SECONDS` (at most 30) the answer is held until the
    transfer reaches a final state (`COMPLETED`, `COMPENSATED`, `FAILED`,
    `NEEDS_ATTENTION`, `CANCELLED`, `RESOLVED`) or the time is up,
    whichever comes first; either
    way it answers 200 with the transfer as it is then. A caller waits
    for the end without polling.

    Args:
        transaction_id (str):
        wait (int | Unset):  Default: 0.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | Transfer]
    """

    kwargs = _get_kwargs(
        transaction_id=transaction_id,
        wait=wait,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    transaction_id: str,
    *,
    client: AuthenticatedClient | Client,
    wait: int | Unset = 0,
) -> Problem | Transfer | None:
    """One transfer; with `wait`, once it has ended or the time is up.

     With `wait=SECONDS` (at most 30) the answer is held until the
    transfer reaches a final state (`COMPLETED`, `COMPENSATED`, `FAILED`,
    `NEEDS_ATTENTION`, `CANCELLED`, `RESOLVED`) or the time is up,
    whichever comes first; either
    way it answers 200 with the transfer as it is then. A caller waits
    for the end without polling.

    Args:
        transaction_id (str):
        wait (int | Unset):  Default: 0.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | Transfer
    """

    return sync_detailed(
        transaction_id=transaction_id,
        client=client,
        wait=wait,
    ).parsed


async def asyncio_detailed(
    transaction_id: str,
    *,
    client: AuthenticatedClient | Client,
    wait: int | Unset = 0,
) -> Response[Problem | Transfer]:
    """One transfer; with `wait`, once it has ended or the time is up.

     With `wait=SECONDS` (at most 30) the answer is held until the
    transfer reaches a final state (`COMPLETED`, `COMPENSATED`, `FAILED`,
    `NEEDS_ATTENTION`, `CANCELLED`, `RESOLVED`) or the time is up,
    whichever comes first; either
    way it answers 200 with the transfer as it is then. A caller waits
    for the end without polling.

    Args:
        transaction_id (str):
        wait (int | Unset):  Default: 0.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | Transfer]
    """

    kwargs = _get_kwargs(
        transaction_id=transaction_id,
        wait=wait,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    transaction_id: str,
    *,
    client: AuthenticatedClient | Client,
    wait: int | Unset = 0,
) -> Problem | Transfer | None:
    """One transfer; with `wait`, once it has ended or the time is up.

     With `wait=SECONDS` (at most 30) the answer is held until the
    transfer reaches a final state (`COMPLETED`, `COMPENSATED`, `FAILED`,
    `NEEDS_ATTENTION`, `CANCELLED`, `RESOLVED`) or the time is up,
    whichever comes first; either
    way it answers 200 with the transfer as it is then. A caller waits
    for the end without polling.

    Args:
        transaction_id (str):
        wait (int | Unset):  Default: 0.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | Transfer
    """

    return (
        await asyncio_detailed(
            transaction_id=transaction_id,
            client=client,
            wait=wait,
        )
    ).parsed
