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
        "url": "/compensate_debit",
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
    """Undo the debit made under the same transaction_id.

     Reverses an applied debit by the amount it recorded (outcome
    `reversed`). With no applied debit it changes no balance and records the
    transaction as voided (outcome `voided`): a later debit under that id is
    refused with 409 `transaction_compensated`, even if a credit under the
    same id stands here (that credit is undone by `compensate_credit`).
    An applied debit is refused with 409 `transfer_completed` while this
    service also holds an applied, unreversed credit under the same id.

    Refused with 409 `reversal_exceeds_balance_limit` when giving the
    money back would take the balance above the limit, because credits
    since the debit filled the account. That refusal is not recorded and
    changes nothing: the debit still stands, and the same request, retried
    once the account has room, reverses it.

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
    """Undo the debit made under the same transaction_id.

     Reverses an applied debit by the amount it recorded (outcome
    `reversed`). With no applied debit it changes no balance and records the
    transaction as voided (outcome `voided`): a later debit under that id is
    refused with 409 `transaction_compensated`, even if a credit under the
    same id stands here (that credit is undone by `compensate_credit`).
    An applied debit is refused with 409 `transfer_completed` while this
    service also holds an applied, unreversed credit under the same id.

    Refused with 409 `reversal_exceeds_balance_limit` when giving the
    money back would take the balance above the limit, because credits
    since the debit filled the account. That refusal is not recorded and
    changes nothing: the debit still stands, and the same request, retried
    once the account has room, reverses it.

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
    """Undo the debit made under the same transaction_id.

     Reverses an applied debit by the amount it recorded (outcome
    `reversed`). With no applied debit it changes no balance and records the
    transaction as voided (outcome `voided`): a later debit under that id is
    refused with 409 `transaction_compensated`, even if a credit under the
    same id stands here (that credit is undone by `compensate_credit`).
    An applied debit is refused with 409 `transfer_completed` while this
    service also holds an applied, unreversed credit under the same id.

    Refused with 409 `reversal_exceeds_balance_limit` when giving the
    money back would take the balance above the limit, because credits
    since the debit filled the account. That refusal is not recorded and
    changes nothing: the debit still stands, and the same request, retried
    once the account has room, reverses it.

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
    """Undo the debit made under the same transaction_id.

     Reverses an applied debit by the amount it recorded (outcome
    `reversed`). With no applied debit it changes no balance and records the
    transaction as voided (outcome `voided`): a later debit under that id is
    refused with 409 `transaction_compensated`, even if a credit under the
    same id stands here (that credit is undone by `compensate_credit`).
    An applied debit is refused with 409 `transfer_completed` while this
    service also holds an applied, unreversed credit under the same id.

    Refused with 409 `reversal_exceeds_balance_limit` when giving the
    money back would take the balance above the limit, because credits
    since the debit filled the account. That refusal is not recorded and
    changes nothing: the debit still stands, and the same request, retried
    once the account has room, reverses it.

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
