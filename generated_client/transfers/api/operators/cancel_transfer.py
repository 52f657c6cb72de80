from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.operator_action_request import OperatorActionRequest
from ...models.problem import Problem
from ...models.transfer import Transfer
from ...types import Response


def _get_kwargs(
    transaction_id: str,
    *,
    body: OperatorActionRequest,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/transfers/{transaction_id}/cancel".format(
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
    body: OperatorActionRequest,
) -> Response[Problem | Transfer]:
    """Cancel a transfer that no run has taken up yet; it ends CANCELLED.

     Only while no worker has claimed the transfer (its lease epoch is 0):
    the cancel is recorded only if the saga is still unclaimed, in the same
    write, so it cannot race a claim. A `PENDING` state alone is not
    enough: a run may have sent the debit before it logs `DEBITING`. Once
    a run took it up: 409 `transfer_in_progress`; once it ended: 409
    `transfer_already_ended`. Cancelling a transfer that is already
    `CANCELLED` records nothing and answers 200 with
    `Idempotent-Replayed: true`, so a lost answer can be asked again.

    Args:
        transaction_id (str):
        body (OperatorActionRequest):

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
    body: OperatorActionRequest,
) -> Problem | Transfer | None:
    """Cancel a transfer that no run has taken up yet; it ends CANCELLED.

     Only while no worker has claimed the transfer (its lease epoch is 0):
    the cancel is recorded only if the saga is still unclaimed, in the same
    write, so it cannot race a claim. A `PENDING` state alone is not
    enough: a run may have sent the debit before it logs `DEBITING`. Once
    a run took it up: 409 `transfer_in_progress`; once it ended: 409
    `transfer_already_ended`. Cancelling a transfer that is already
    `CANCELLED` records nothing and answers 200 with
    `Idempotent-Replayed: true`, so a lost answer can be asked again.

    Args:
        transaction_id (str):
        body (OperatorActionRequest):

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
    body: OperatorActionRequest,
) -> Response[Problem | Transfer]:
    """Cancel a transfer that no run has taken up yet; it ends CANCELLED.

     Only while no worker has claimed the transfer (its lease epoch is 0):
    the cancel is recorded only if the saga is still unclaimed, in the same
    write, so it cannot race a claim. A `PENDING` state alone is not
    enough: a run may have sent the debit before it logs `DEBITING`. Once
    a run took it up: 409 `transfer_in_progress`; once it ended: 409
    `transfer_already_ended`. Cancelling a transfer that is already
    `CANCELLED` records nothing and answers 200 with
    `Idempotent-Replayed: true`, so a lost answer can be asked again.

    Args:
        transaction_id (str):
        body (OperatorActionRequest):

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
    body: OperatorActionRequest,
) -> Problem | Transfer | None:
    """Cancel a transfer that no run has taken up yet; it ends CANCELLED.

     Only while no worker has claimed the transfer (its lease epoch is 0):
    the cancel is recorded only if the saga is still unclaimed, in the same
    write, so it cannot race a claim. A `PENDING` state alone is not
    enough: a run may have sent the debit before it logs `DEBITING`. Once
    a run took it up: 409 `transfer_in_progress`; once it ended: 409
    `transfer_already_ended`. Cancelling a transfer that is already
    `CANCELLED` records nothing and answers 200 with
    `Idempotent-Replayed: true`, so a lost answer can be asked again.

    Args:
        transaction_id (str):
        body (OperatorActionRequest):

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
