from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.problem import Problem
from ...models.transaction_trail import TransactionTrail
from ...types import Response


def _get_kwargs(
    transaction_id_path: str,
    *,
    transaction_id_header: str,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    headers["transaction_id"] = transaction_id_header

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/transactions/{transaction_id_path}".format(
            transaction_id_path=quote(str(transaction_id_path), safe=""),
        ),
    }

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Problem | TransactionTrail | None:
    if response.status_code == 200:
        response_200 = TransactionTrail.from_dict(response.json())

        return response_200

    if response.status_code == 400:
        response_400 = Problem.from_dict(response.json())

        return response_400

    if response.status_code == 401:
        response_401 = Problem.from_dict(response.json())

        return response_401

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
) -> Response[Problem | TransactionTrail]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    transaction_id_path: str,
    *,
    client: AuthenticatedClient | Client,
    transaction_id_header: str,
) -> Response[Problem | TransactionTrail]:
    """The audit trail of one transaction on this service.

     Every operation this service recorded under the transaction id, in the
    order it recorded them: applied, reversed and voided operations, and
    recorded business rejections. An id this service never saw has an empty
    trail.

    Args:
        transaction_id_path (str):
        transaction_id_header (str):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | TransactionTrail]
    """

    kwargs = _get_kwargs(
        transaction_id_path=transaction_id_path,
        transaction_id_header=transaction_id_header,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    transaction_id_path: str,
    *,
    client: AuthenticatedClient | Client,
    transaction_id_header: str,
) -> Problem | TransactionTrail | None:
    """The audit trail of one transaction on this service.

     Every operation this service recorded under the transaction id, in the
    order it recorded them: applied, reversed and voided operations, and
    recorded business rejections. An id this service never saw has an empty
    trail.

    Args:
        transaction_id_path (str):
        transaction_id_header (str):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | TransactionTrail
    """

    return sync_detailed(
        transaction_id_path=transaction_id_path,
        client=client,
        transaction_id_header=transaction_id_header,
    ).parsed


async def asyncio_detailed(
    transaction_id_path: str,
    *,
    client: AuthenticatedClient | Client,
    transaction_id_header: str,
) -> Response[Problem | TransactionTrail]:
    """The audit trail of one transaction on this service.

     Every operation this service recorded under the transaction id, in the
    order it recorded them: applied, reversed and voided operations, and
    recorded business rejections. An id this service never saw has an empty
    trail.

    Args:
        transaction_id_path (str):
        transaction_id_header (str):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | TransactionTrail]
    """

    kwargs = _get_kwargs(
        transaction_id_path=transaction_id_path,
        transaction_id_header=transaction_id_header,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    transaction_id_path: str,
    *,
    client: AuthenticatedClient | Client,
    transaction_id_header: str,
) -> Problem | TransactionTrail | None:
    """The audit trail of one transaction on this service.

     Every operation this service recorded under the transaction id, in the
    order it recorded them: applied, reversed and voided operations, and
    recorded business rejections. An id this service never saw has an empty
    trail.

    Args:
        transaction_id_path (str):
        transaction_id_header (str):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | TransactionTrail
    """

    return (
        await asyncio_detailed(
            transaction_id_path=transaction_id_path,
            client=client,
            transaction_id_header=transaction_id_header,
        )
    ).parsed
