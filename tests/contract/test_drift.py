"""The app's routes, parameters and schemas match openapi/openapi.yaml, which it serves as is."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.openapi.utils import get_openapi

from server import Settings, create_app
from server.contract import load_contract
from tests.support.inprocess import asgi_client

CONSTRAINTS = ("type", "minLength", "maxLength", "pattern", "minimum", "maximum")


def resolve(document: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): resolve(document, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    }


def parameters(document: dict[str, Any], operation: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    result = {}
    for parameter in operation.get("parameters", []):
        parameter = resolve(document, parameter)
        schema = resolve(document, parameter["schema"])
        result[(parameter["in"], parameter["name"])] = {
            "required": parameter.get("required", False),
            **{key: schema[key] for key in CONSTRAINTS if key in schema},
        }
    return result


def body_schema(document: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any] | None:
    body = resolve(document, operation.get("requestBody"))
    if body is None:
        return None
    schema = resolve(document, body["content"]["application/json"]["schema"])
    return {
        "required": sorted(schema.get("required", [])),
        "additionalProperties": schema.get("additionalProperties", True),
        "properties": {
            name: {key: resolve(document, prop)[key] for key in CONSTRAINTS if key in resolve(document, prop)}
            for name, prop in schema["properties"].items()
        },
    }


@pytest.fixture(scope="module")
def documents() -> tuple[dict[str, Any], dict[str, Any]]:
    app = create_app(Settings(log_requests=False))
    generated = get_openapi(title=app.title, version=app.version, routes=app.routes)
    return load_contract(), generated


def test_same_operations(documents: tuple[dict[str, Any], dict[str, Any]]) -> None:
    contract, generated = documents
    assert set(operations(generated)) == set(operations(contract))
    for key, operation in operations(contract).items():
        assert operations(generated)[key]["operationId"] == operation["operationId"], key


def test_same_parameters(documents: tuple[dict[str, Any], dict[str, Any]]) -> None:
    contract, generated = documents
    for key, operation in operations(contract).items():
        assert parameters(generated, operations(generated)[key]) == parameters(contract, operation), key


def test_every_operation_requires_the_transaction_id_header(documents: tuple[dict[str, Any], dict[str, Any]]) -> None:
    contract, _ = documents
    for key, operation in operations(contract).items():
        assert parameters(contract, operation)[("header", "transaction_id")]["required"] is True, key


def test_same_request_bodies(documents: tuple[dict[str, Any], dict[str, Any]]) -> None:
    contract, generated = documents
    for key, operation in operations(contract).items():
        assert body_schema(generated, operations(generated)[key]) == body_schema(contract, operation), key


def test_same_documented_statuses(documents: tuple[dict[str, Any], dict[str, Any]]) -> None:
    contract, generated = documents
    for key, operation in operations(contract).items():
        declared = {
            status
            for status, response in operations(generated)[key]["responses"].items()
            # FastAPI documents a 422 of its own on every route with parameters.
            if response.get("description") != "Validation Error"
        }
        assert declared == set(operation["responses"]), key


def test_error_codes_in_the_contract_match_the_server() -> None:
    from typing import get_args

    from server.problems import ErrorCode

    contract = load_contract()
    assert contract["components"]["schemas"]["ErrorCode"]["enum"] == list(get_args(ErrorCode))


def test_the_served_document_is_the_committed_contract() -> None:
    async def fetch() -> tuple[Any, Any]:
        async with asgi_client(create_app(Settings(log_requests=False))) as client:
            return await client.get("/openapi.json"), await client.get("/docs")

    served, docs = asyncio.run(fetch())
    assert served.json() == load_contract()
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
