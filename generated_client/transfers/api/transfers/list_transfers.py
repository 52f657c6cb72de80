from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.problem import Problem
from ...models.transfer_page import TransferPage
from ...models.transfer_state import TransferState
from ...types import UNSET, Response, Unset


def _get_kwargs(
    *,
    state: TransferState | Unset = UNSET,
    limit: int | Unset = 50,
    after: str | Unset = UNSET,
) -> dict[str, Any]:

    params: dict[str, Any] = {}

    json_state: str | Unset = UNSET
    if not isinstance(state, Unset):
        json_state = state.value

    params["state"] = json_state

    params["limit"] = limit

    params["after"] = after

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/transfers",
        "params": params,
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Problem | TransferPage | None:
    if response.status_code == 200:
        response_200 = TransferPage.from_dict(response.json())

        return response_200

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
) -> Response[Problem | TransferPage]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient | Client,
    state: TransferState | Unset = UNSET,
    limit: int | Unset = 50,
    after: str | Unset = UNSET,
) -> Response[Problem | TransferPage]:
    """A page of transfers, newest first.

     At most `limit` transfers, newest first, optionally only those in one
    state. When more follow, `next` is an opaque cursor: pass it as
    `after` for the next page. No page is ever unbounded.

    Args:
        state (TransferState | Unset): `COMPLETED`, `COMPENSATED`, `FAILED`, `NEEDS_ATTENTION`,
            `CANCELLED`
            and `RESOLVED` are final: no automation moves a transfer out of them.
            `COMPLETED`: debited and credited. `COMPENSATED`: the debit was given
            back. `FAILED`: the debit was refused or never sent, so nothing
            moved. `NEEDS_ATTENTION`: an accounts service forgot the transfer; an
            operator decides, and only an operator's `resolve` leads on, to
            `RESOLVED`: settled by hand. `CANCELLED`: an operator cancelled it
            before any request was sent.
        limit (int | Unset):  Default: 50.
        after (str | Unset): An opaque position in a listing.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | TransferPage]
    """

    kwargs = _get_kwargs(
        state=state,
        limit=limit,
        after=after,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient | Client,
    state: TransferState | Unset = UNSET,
    limit: int | Unset = 50,
    after: str | Unset = UNSET,
) -> Problem | TransferPage | None:
    """A page of transfers, newest first.

     At most `limit` transfers, newest first, optionally only those in one
    state. When more follow, `next` is an opaque cursor: pass it as
    `after` for the next page. No page is ever unbounded.

    Args:
        state (TransferState | Unset): `COMPLETED`, `COMPENSATED`, `FAILED`, `NEEDS_ATTENTION`,
            `CANCELLED`
            and `RESOLVED` are final: no automation moves a transfer out of them.
            `COMPLETED`: debited and credited. `COMPENSATED`: the debit was given
            back. `FAILED`: the debit was refused or never sent, so nothing
            moved. `NEEDS_ATTENTION`: an accounts service forgot the transfer; an
            operator decides, and only an operator's `resolve` leads on, to
            `RESOLVED`: settled by hand. `CANCELLED`: an operator cancelled it
            before any request was sent.
        limit (int | Unset):  Default: 50.
        after (str | Unset): An opaque position in a listing.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | TransferPage
    """

    return sync_detailed(
        client=client,
        state=state,
        limit=limit,
        after=after,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient | Client,
    state: TransferState | Unset = UNSET,
    limit: int | Unset = 50,
    after: str | Unset = UNSET,
) -> Response[Problem | TransferPage]:
    """A page of transfers, newest first.

     At most `limit` transfers, newest first, optionally only those in one
    state. When more follow, `next` is an opaque cursor: pass it as
    `after` for the next page. No page is ever unbounded.

    Args:
        state (TransferState | Unset): `COMPLETED`, `COMPENSATED`, `FAILED`, `NEEDS_ATTENTION`,
            `CANCELLED`
            and `RESOLVED` are final: no automation moves a transfer out of them.
            `COMPLETED`: debited and credited. `COMPENSATED`: the debit was given
            back. `FAILED`: the debit was refused or never sent, so nothing
            moved. `NEEDS_ATTENTION`: an accounts service forgot the transfer; an
            operator decides, and only an operator's `resolve` leads on, to
            `RESOLVED`: settled by hand. `CANCELLED`: an operator cancelled it
            before any request was sent.
        limit (int | Unset):  Default: 50.
        after (str | Unset): An opaque position in a listing.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Problem | TransferPage]
    """

    kwargs = _get_kwargs(
        state=state,
        limit=limit,
        after=after,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient | Client,
    state: TransferState | Unset = UNSET,
    limit: int | Unset = 50,
    after: str | Unset = UNSET,
) -> Problem | TransferPage | None:
    """A page of transfers, newest first.

     At most `limit` transfers, newest first, optionally only those in one
    state. When more follow, `next` is an opaque cursor: pass it as
    `after` for the next page. No page is ever unbounded.

    Args:
        state (TransferState | Unset): `COMPLETED`, `COMPENSATED`, `FAILED`, `NEEDS_ATTENTION`,
            `CANCELLED`
            and `RESOLVED` are final: no automation moves a transfer out of them.
            `COMPLETED`: debited and credited. `COMPENSATED`: the debit was given
            back. `FAILED`: the debit was refused or never sent, so nothing
            moved. `NEEDS_ATTENTION`: an accounts service forgot the transfer; an
            operator decides, and only an operator's `resolve` leads on, to
            `RESOLVED`: settled by hand. `CANCELLED`: an operator cancelled it
            before any request was sent.
        limit (int | Unset):  Default: 50.
        after (str | Unset): An opaque position in a listing.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Problem | TransferPage
    """

    return (
        await asyncio_detailed(
            client=client,
            state=state,
            limit=limit,
            after=after,
        )
    ).parsed
