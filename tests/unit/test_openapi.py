"""/openapi.json tells the truth: its contract table matches what each handler really reads, and
the document is self-consistent (every `$ref` resolves, every problem is a Problem)."""

from __future__ import annotations

import inspect
import re
import tempfile
from typing import Any

import pytest

from cluster.settings import Settings
from router.app import create_app
from router.openapi import CONTRACTS, handlers
from router.problems import TITLES

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def app() -> Any:
    return create_app(Settings(jwt_secret="unit-test-secret-0123456789abcdef", data_dir=tempfile.mkdtemp()))


@pytest.fixture(scope="module")
def document(app: Any) -> dict[str, Any]:
    return dict(app.openapi())


def routes(app: Any) -> dict[tuple[str, str], Any]:
    """Every documented operation's handler: FastAPI's routes and the edge's hot routes."""
    return handlers(app, app.edge.routes)


def test_every_operation_has_a_contract_and_every_contract_an_operation(app: Any) -> None:
    assert set(routes(app)) == set(CONTRACTS)


def test_each_contract_matches_what_its_handler_reads(app: Any) -> None:
    """The table is written by hand; the handler's source is the truth it must follow."""
    for key, endpoint in routes(app).items():
        source = _source_with_helpers(endpoint)
        contract = CONTRACTS[key]
        assert ("authorize(" in source) == contract.authenticated, key
        assert ("idempotency_key(" in source) == contract.idempotent, key
        assert ("rate_limit(" in source) == contract.rate_limited, key
        assert ("QUEUE_TOKEN_HEADER" in source) == contract.queue_token, key
        body = re.search(r"parse_body\(request, (\w+)\)", source)
        assert (body.group(1) if body else None) == contract.body, key


def _source_with_helpers(endpoint: Any) -> str:
    """The handler's source and that of the module functions it calls (one level: `_checkin_body`)."""
    source = inspect.getsource(endpoint)
    helpers = [endpoint.__globals__.get(name) for name in re.findall(r"\b(_\w+)\(", source)]
    return source + "".join(inspect.getsource(helper) for helper in helpers if inspect.isfunction(helper))


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    text = repr(document)
    for name in set(re.findall(r"#/components/schemas/(\w+)", text)):
        assert name in document["components"]["schemas"], name


def test_problems_are_declared_with_the_code_enum_and_bearer_security(document: dict[str, Any]) -> None:
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["properties"]["code"]["enum"]) == set(TITLES)
    assert {"type", "title", "status", "detail", "code", "request_id"} <= set(problem["required"])
    assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer",
                                                                    "bearerFormat": "JWT"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response["content"] == {"application/problem+json": {
                        "schema": {"$ref": "#/components/schemas/Problem"}}}, (method, path, status)
            assert ("security" in operation) == ("401" in operation["responses"]), (method, path)


def test_bodies_and_headers_are_declared(document: dict[str, Any]) -> None:
    holds = document["paths"]["/v1/holds"]["post"]
    assert holds["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/HoldCreate"}
    assert {"Idempotency-Key", "X-Queue-Token", "X-Request-Id"} <= {p["name"] for p in holds["parameters"]}
    assert holds["responses"]["201"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Hold"}
    assert "Retry-After" in holds["responses"]["503"]["headers"]
    nul = "\u0000"
    assert re.fullmatch(document["components"]["schemas"]["HoldCreate"]["properties"]["presale_code"]["anyOf"][0]
                        ["pattern"], f"a{nul}") is None
