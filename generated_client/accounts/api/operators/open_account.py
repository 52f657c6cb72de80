from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.account_opening import AccountOpening
from ...models.open_account_request import OpenAccountRequest
from ...models.problem import Problem
from ...types import Response


def _get_kwargs(
    *,
    body: OpenAccountRequest,
    transaction_id: str,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    headers["transaction_id"] = transaction_id

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/accounts",
    }

    _kwargs["json"] = body.to_dict()

    headers["Content-Type"] = "application/json"

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> AccountOpening | Problem | None:
    if response.status_code == 201:
        response_201 = AccountOpening.from_dict(response.json())

        return response_201

    if response.status_code == 400:
        response_400 = Problem.from_dict(response.json())

        return response_400

    if response.status_code == 401:
        response_401 = Problem.from_dict(response.json())

        return response_401

    if response.status_code == 403:
        response_403 = Problem.from_dict(response.json())

        return response_403

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
) -> Response[AccountOpening | Problem]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient,
    body: OpenAccountRequest,
    transaction_id: str,
) -> Response[AccountOpening | Problem]:
    """Open an account on the running ledger, bringing its opening balance in (operators only).

     Needs an operator token (`--operator-token NAME=SECRET`): a request
    with another token is refused with 403 `operator_only`, as is every
    request to a service started without operator tokens.

    The opening balance is money brought into the ledger from outside it,
    not moved by a transfer: the account lists it as `opening_balance`, so
    that every conservation check counts it as brought in, not minted.

    Idempotent under the `transaction_id` header: a repeat with the same
    `user_id` and `opening_balance` replays the first answer (a refusal
    included) with `Idempotent-Replayed: true`, whoever asks and whatever
    reason they give; the same id with another user or balance is 422
    `idempotency_key_reused`. An account that exists is never opened again
    (409 `account_exists`), and one over the balance limit never opened
    (409 `balance_limit_exceeded`); both refusals are recorded and
    replayed. The opening, with the operator's name and reason, is part of
    the transaction's audit trail (`GET /transactions/{transaction_id}`).

    Args:
        transaction_id (str):
        body (OpenAccountRequest):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AccountOpening | Problem]
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
    client: AuthenticatedClient,
    body: OpenAccountRequest,
    transaction_id: str,
) -> AccountOpening | Problem | None:
    """Open an account on the running ledger, bringing its opening balance in (operators only).

     Needs an operator token (`--operator-token NAME=SECRET`): a request
    with another token is refused with 403 `operator_only`, as is every
    request to a service started without operator tokens.

    The opening balance is money brought into the ledger from outside it,
    not moved by a transfer: the account lists it as `opening_balance`, so
    that every conservation check counts it as brought in, not minted.

    Idempotent under the `transaction_id` header: a repeat with the same
    `user_id` and `opening_balance` replays the first answer (a refusal
    included) with `Idempotent-Replayed: true`, whoever asks and whatever
    reason they give; the same id with another user or balance is 422
    `idempotency_key_reused`. An account that exists is never opened again
    (409 `account_exists`), and one over the balance limit never opened
    (409 `balance_limit_exceeded`); both refusals are recorded and
    replayed. The opening, with the operator's name and reason, is part of
    the transaction's audit trail (`GET /transactions/{transaction_id}`).

    Args:
        transaction_id (str):
        body (OpenAccountRequest):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AccountOpening | Problem
    """

    return sync_detailed(
        client=client,
        body=body,
        transaction_id=transaction_id,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient,
    body: OpenAccountRequest,
    transaction_id: str,
) -> Response[AccountOpening | Problem]:
    """Open an account on the running ledger, bringing its opening balance in (operators only).

     Needs an operator token (`--operator-token NAME=SECRET`): a request
    with another token is refused with 403 `operator_only`, as is every
    request to a service started without operator tokens.

    The opening balance is money brought into the ledger from outside it,
    not moved by a transfer: the account lists it as `opening_balance`, so
    that every conservation check counts it as brought in, not minted.

    Idempotent under the `transaction_id` header: a repeat with the same
    `user_id` and `opening_balance` replays the first answer (a refusal
    included) with `Idempotent-Replayed: true`, whoever asks and whatever
    reason they give; the same id with another user or balance is 422
    `idempotency_key_reused`. An account that exists is never opened again
    (409 `account_exists`), and one over the balance limit never opened
    (409 `balance_limit_exceeded`); both refusals are recorded and
    replayed. The opening, with the operator's name and reason, is part of
    the transaction's audit trail (`GET /transactions/{transaction_id}`).

    Args:
        transaction_id (str):
        body (OpenAccountRequest):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AccountOpening | Problem]
    """

    kwargs = _get_kwargs(
        body=body,
        transaction_id=transaction_id,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient,
    body: OpenAccountRequest,
    transaction_id: str,
) -> AccountOpening | Problem | None:
    """Open an account on the running ledger, bringing its opening balance in (operators only).

     Needs an operator token (`--operator-token NAME=SECRET`): a request
    with another token is refused with 403 `operator_only`, as is every
    request to a service started without operator tokens.

    The opening balance is money brought into the ledger from outside it,
    not moved by a transfer: the account lists it as `opening_balance`, so
    that every conservation check counts it as brought in, not minted.

    Idempotent under the `transaction_id` header: a repeat with the same
    `user_id` and `opening_balance` replays the first answer (a refusal
    included) with `Idempotent-Replayed: true`, whoever asks and whatever
    reason they give; the same id with another user or balance is 422
    `idempotency_key_reused`. An account that exists is never opened again
    (409 `account_exists`), and one over the balance limit never opened
    (409 `balance_limit_exceeded`); both refusals are recorded and
    replayed. The opening, with the operator's name and reason, is part of
    the transaction's audit trail (`GET /transactions/{transaction_id}`).

    Args:
        transaction_id (str):
        body (OpenAccountRequest):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AccountOpening | Problem
    """

    return (
        await asyncio_detailed(
            client=client,
            body=body,
            transaction_id=transaction_id,
        )
    ).parsed
