from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.problem import Problem
from ...models.resolve_request import ResolveRequest
from ...models.transfer import Transfer
from ...types import Response


def _get_kwargs(
    transaction_id: str,
    *,
    body: ResolveRequest,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/transfers/{transaction_id}/resolve".format(
            transaction_id=quote(str(transaction_id), safe=""),
        ),
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

    if response.status_code == 401:
        response_401 = Problem.from_dict(response.json())

        return response_401

    if response.status_code == 403:
        response_403 = Problem.from_dict(response.json())

        return response_403

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
    client: AuthenticatedClient,
    body: ResolveRequest,
) -> Response[Problem | Transfer]:
    """Settle a NEEDS_ATTENTION transfer by hand; it ends RESOLVED.

     For a transfer that automation stopped (`NEEDS_ATTENTION`), after
    an operator compared the services' audit trails with the timeline and
    put the money right: `moved_by_hand` when money was moved outside the
    saga, `nothing_to_move` when the trails show nothing left to move. In
    any other state, 409 `transfer_not_awaiting_operator`; resolving a
    transfer already `RESOLVED` the same way records nothing and answers
    200 with `Idempotent-Replayed: true`.

    Args:
        transaction_id (str):
        body (ResolveRequest):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | Transfer]
    """

    kwargs = _get_kwargs(
        transaction_id=transaction_id,
        body=body,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    transaction_id: str,
    *,
    client: AuthenticatedClient,
    body: ResolveRequest,
) -> Problem | Transfer | None:
    """Settle a NEEDS_ATTENTION transfer by hand; it ends RESOLVED.

     For a transfer that automation stopped (`NEEDS_ATTENTION`), after
    an operator compared the services' audit trails with the timeline and
    put the money right: `moved_by_hand` when money was moved outside the
    saga, `nothing_to_move` when the trails show nothing left to move. In
    any other state, 409 `transfer_not_awaiting_operator`; resolving a
    transfer already `RESOLVED` the same way records nothing and answers
    200 with `Idempotent-Replayed: true`.

    Args:
        transaction_id (str):
        body (ResolveRequest):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | Transfer
    """

    return sync_detailed(
        transaction_id=transaction_id,
        client=client,
        body=body,
    ).parsed


async def asyncio_detailed(
    transaction_id: str,
    *,
    client: AuthenticatedClient,
    body: ResolveRequest,
) -> Response[Problem | Transfer]:
    """Settle a NEEDS_ATTENTION transfer by hand; it ends RESOLVED.

     For a transfer that automation stopped (`NEEDS_ATTENTION`), after
    an operator compared the services' audit trails with the timeline and
    put the money right: `moved_by_hand` when money was moved outside the
    saga, `nothing_to_move` when the trails show nothing left to move. In
    any other state, 409 `transfer_not_awaiting_operator`; resolving a
    transfer already `RESOLVED` the same way records nothing and answers
    200 with `Idempotent-Replayed: true`.

    Args:
        transaction_id (str):
        body (ResolveRequest):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | Transfer]
    """

    kwargs = _get_kwargs(
        transaction_id=transaction_id,
        body=body,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    transaction_id: str,
    *,
    client: AuthenticatedClient,
    body: ResolveRequest,
) -> Problem | Transfer | None:
    """Settle a NEEDS_ATTENTION transfer by hand; it ends RESOLVED.

     For a transfer that automation stopped (`NEEDS_ATTENTION`), after
    an operator compared the services' audit trails with the timeline and
    put the money right: `moved_by_hand` when money was moved outside the
    saga, `nothing_to_move` when the trails show nothing left to move. In
    any other state, 409 `transfer_not_awaiting_operator`; resolving a
    transfer already `RESOLVED` the same way records nothing and answers
    200 with `Idempotent-Replayed: true`.

    Args:
        transaction_id (str):
        body (ResolveRequest):

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
            body=body,
        )
    ).parsed
