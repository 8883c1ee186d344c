"""The shared spec check refuses what Shoptet would refuse (so passing node tests mean something)."""

from __future__ import annotations

import httpx
import pytest
from nodes_fakes import API
from nodes_openapi_check import CONTENT_TYPE, OpenApiSpec

HEADERS = {"Content-Type": CONTENT_TYPE, "Shoptet-Private-API-Token": "t"}


def request(method: str, path: str, **kwargs: object) -> httpx.Request:
    headers = kwargs.pop("headers", HEADERS)
    return httpx.Request(method, f"{API}{path}", headers=headers, **kwargs)  # type: ignore[arg-type]


def test_valid_requests_pass(openapi: OpenApiSpec) -> None:
    assert openapi.problems(request("GET", "/api/orders/snapshot?include=notes")) == []
    assert openapi.problems(request("GET", "/api/orders/changes?from=2024-01-01T00:00:00Z&page=2")) == []
    body = b'{"data": [{"productCode": "A", "amountChange": 1}]}'
    assert openapi.problems(request("PATCH", "/api/stocks/1/movements", content=body)) == []


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("GET", "/api/nothing", None, "no such operation"),
        ("PUT", "/api/orders/1/status", None, "no such operation"),
        ("GET", "/api/orders?creationFrom=x", None, "unknown query parameter 'creationFrom'"),
        ("GET", "/api/orders?page=two", None, "query parameter page='two'"),
        ("GET", "/api/orders/changes", None, "missing required query parameter 'from'"),
        ("GET", "/api/stocks/main/movements", None, "path parameter stockId='main'"),
        ("PATCH", "/api/orders/1/status", b'{"data": {}}', "body"),
        ("PATCH", "/api/stocks/1/movements", b'{"data": [{"productCode": "A"}]}', "body"),
        ("POST", "/api/webhooks", b'{"data": [{"event": "order:create"}]}', "'url' is a required property"),
    ],
)
def test_invalid_requests_are_refused(
    openapi: OpenApiSpec, method: str, path: str, body: bytes | None, expected: str
) -> None:
    problems = openapi.problems(request(method, path, content=body))
    assert any(expected in p for p in problems), problems


def test_headers_are_checked(openapi: OpenApiSpec) -> None:
    problems = openapi.problems(request("GET", "/api/stocks", headers={"Content-Type": "application/json"}))
    assert any("Content-Type" in p for p in problems)
    assert any("auth header" in p for p in problems)
