from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.ledger_request import LedgerRequest
from ...models.ledger_result import LedgerResult
from ...models.problem import Problem
from ...types import Response


def _get_kwargs(
    *,
    body: LedgerRequest,
    transaction_id: str,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    headers["transaction_id"] = transaction_id

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/credit",
    }

    _kwargs["json"] = body.to_dict()

    headers["Content-Type"] = "application/json"

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> LedgerResult | Problem | None:
    if response.status_code == 200:
        response_200 = LedgerResult.from_dict(response.json())

        return response_200

    if response.status_code == 400:
        response_400 = Problem.from_dict(response.json())

        return response_400

    if response.status_code == 401:
        response_401 = Problem.from_dict(response.json())

        return response_401

    if response.status_code == 404:
        response_404 = Problem.from_dict(response.json())

        return response_404

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
) -> Response[LedgerResult | Problem]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient | Client,
    body: LedgerRequest,
    transaction_id: str,
) -> Response[LedgerResult | Problem]:
    """Add an amount to a user's balance.

     Fault injection: with the configured probability this operation answers
    500 `injected_fault` before touching any state. A second, independent
    probability applies the credit and then answers 500 `injected_fault`
    (a lost response). Either way a retry under the same `transaction_id`
    is safe.

    Args:
        transaction_id (str):
        body (LedgerRequest):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[LedgerResult | Problem]
    """

    kwargs = _get_kwargs(
        body=body,
        transaction_id=transaction_id,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient | Client,
    body: LedgerRequest,
    transaction_id: str,
) -> LedgerResult | Problem | None:
    """Add an amount to a user's balance.

     Fault injection: with the configured probability this operation answers
    500 `injected_fault` before touching any state. A second, independent
    probability applies the credit and then answers 500 `injected_fault`
    (a lost response). Either way a retry under the same `transaction_id`
    is safe.

    Args:
        transaction_id (str):
        body (LedgerRequest):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        LedgerResult | Problem
    """

    return sync_detailed(
        client=client,
        body=body,
        transaction_id=transaction_id,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient | Client,
    body: LedgerRequest,
    transaction_id: str,
) -> Response[LedgerResult | Problem]:
    """Add an amount to a user's balance.

     Fault injection: with the configured probability this operation answers
    500 `injected_fault` before touching any state. A second, independent
    probability applies the credit and then answers 500 `injected_fault`
    (a lost response). Either way a retry under the same `transaction_id`
    is safe.

    Args:
        transaction_id (str):
        body (LedgerRequest):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[LedgerResult | Problem]
    """

    kwargs = _get_kwargs(
        body=body,
        transaction_id=transaction_id,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient | Client,
    body: LedgerRequest,
    transaction_id: str,
) -> LedgerResult | Problem | None:
    """Add an amount to a user's balance.

     Fault injection: with the configured probability this operation answers
    500 `injected_fault` before touching any state. A second, independent
    probability applies the credit and then answers 500 `injected_fault`
    (a lost response). Either way a retry under the same `transaction_id`
    is safe.

    Args:
        transaction_id (str):
        body (LedgerRequest):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        LedgerResult | Problem
    """

    return (
        await asyncio_detailed(
            client=client,
            body=body,
            transaction_id=transaction_id,
        )
    ).parsed
