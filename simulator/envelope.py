"""The response envelope every Shoptet API answer shares: ``{data, errors, metadata}``.

Routes return plain ``data`` or raise ``ShoptetError``; this module is the only place that builds
the envelope, so success and error bodies cannot drift apart.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

JSON_TYPE = "application/json; charset=utf-8"


class ShoptetError(Exception):
    """An error answer as Shoptet gives it: HTTP status plus one ``{errorCode, message, instance}``."""

    def __init__(
        self,
        status: int,
        error_code: str,
        message: str,
        instance: str = "unknown",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.instance = instance
        self.headers = dict(headers or {})

    def to_response(self) -> Response:
        error = {"errorCode": self.error_code, "message": self.message, "instance": self.instance}
        return envelope_response(None, status=self.status, errors=[error], headers=self.headers)


def request_id() -> str:
    return str(uuid.uuid4())


def envelope_bytes(data: Any, errors: list[dict[str, str]] | None = None, rid: str | None = None) -> bytes:
    body = {"data": data, "errors": errors or None, "metadata": {"requestId": rid or request_id()}}
    # orjson: the same compact UTF-8 JSON as json.dumps(separators=(",", ":"), ensure_ascii=False),
    # in a fraction of the time (stdlib encoding was an eighth of the simulator's time)
    return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)


def envelope_response(
    data: Any,
    *,
    status: int = 200,
    errors: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    rid = request_id()
    all_headers = {"X-Request-ID": rid, **(headers or {})}
    return Response(envelope_bytes(data, errors, rid), status_code=status, media_type=JSON_TYPE, headers=all_headers)


def not_found(error_code: str, message: str, instance: str) -> ShoptetError:
    return ShoptetError(404, error_code, message, instance)


def parse_json_body(raw: bytes) -> Any:
    """Shoptet clients send ``application/vnd.shoptet.v1.0``, which FastAPI would not parse as JSON."""
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise ShoptetError(422, "invalid-request-data", f"Request body is not valid JSON: {exc}", "body") from exc
