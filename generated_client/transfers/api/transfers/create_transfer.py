from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.problem import Problem
from ...models.transfer import Transfer
from ...models.transfer_request import TransferRequest
from ...types import Response


def _get_kwargs(
    *,
    body: TransferRequest,
    idempotency_key: str,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    headers["Idempotency-Key"] = idempotency_key

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/transfers",
    }

    _kwargs["json"] = body.to_dict()

    headers["Content-Type"] = "application/json"

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Problem | Transfer | None:
    if response.status_code == 200:
        response_200 = Transfer.from_dict(response.json())

        return response_200

    if response.status_code == 201:
        response_201 = Transfer.from_dict(response.json())

        return response_201

    if response.status_code == 400:
        response_400 = Problem.from_dict(response.json())

        return response_400

    if response.status_code == 401:
        response_401 = Problem.from_dict(response.json())

        return response_401

    if response.status_code == 409:
        response_409 = Problem.from_dict(response.json())

        return response_409

    if response.status_code == 413:
        response_413 = Problem.from_dict(response.json())

        return response_413

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
    *,
    client: AuthenticatedClient | Client,
    body: TransferRequest,
    idempotency_key: str,
) -> Response[Problem | Transfer]:
    """Submit a transfer; it is durable in the saga log when this answers 201.

     The first request with an `Idempotency-Key` records the transfer and
    answers 201 with its `Location`. Any later request with the same key
    and the same body records nothing and answers 200 with the transfer
    as it is now, and the header `Idempotent-Replayed: true`; with another
    body it is refused with 422 `idempotency_key_reused`. So a caller that
    lost an answer sends the same request again, under the same key.

    Args:
        idempotency_key (str):
        body (TransferRequest):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | Transfer]
    """

    kwargs = _get_kwargs(
        body=body,
        idempotency_key=idempotency_key,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient | Client,
    body: TransferRequest,
    idempotency_key: str,
) -> Problem | Transfer | None:
    """Submit a transfer; it is durable in the saga log when this answers 201.

     The first request with an `Idempotency-Key` records the transfer and
    answers 201 with its `Location`. Any later request with the same key
    and the same body records nothing and answers 200 with the transfer
    as it is now, and the header `Idempotent-Replayed: true`; with another
    body it is refused with 422 `idempotency_key_reused`. So a caller that
    lost an answer sends the same request again, under the same key.

    Args:
        idempotency_key (str):
        body (TransferRequest):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | Transfer
    """

    return sync_detailed(
        client=client,
        body=body,
        idempotency_key=idempotency_key,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient | Client,
    body: TransferRequest,
    idempotency_key: str,
) -> Response[Problem | Transfer]:
    """Submit a transfer; it is durable in the saga log when this answers 201.

     The first request with an `Idempotency-Key` records the transfer and
    answers 201 with its `Location`. Any later request with the same key
    and the same body records nothing and answers 200 with the transfer
    as it is now, and the header `Idempotent-Replayed: true`; with another
    body it is refused with 422 `idempotency_key_reused`. So a caller that
    lost an answer sends the same request again, under the same key.

    Args:
        idempotency_key (str):
        body (TransferRequest):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | Transfer]
    """

    kwargs = _get_kwargs(
        body=body,
        idempotency_key=idempotency_key,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient | Client,
    body: TransferRequest,
    idempotency_key: str,
) -> Problem | Transfer | None:
    """Submit a transfer; it is durable in the saga log when this answers 201.

     The first request with an `Idempotency-Key` records the transfer and
    answers 201 with its `Location`. Any later request with the same key
    and the same body records nothing and answers 200 with the transfer
    as it is now, and the header `Idempotent-Replayed: true`; with another
    body it is refused with 422 `idempotency_key_reused`. So a caller that
    lost an answer sends the same request again, under the same key.

    Args:
        idempotency_key (str):
        body (TransferRequest):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | Transfer
    """

    return (
        await asyncio_detailed(
            client=client,
            body=body,
            idempotency_key=idempotency_key,
        )
    ).parsed
