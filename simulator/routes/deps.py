"""Helpers the route modules share: state and e-shop lookup, paging, query and body parsing."""

from __future__ import annotations

import math
import operator
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from simulator.envelope import ShoptetError, envelope_response, parse_json_body
from simulator.gateway import ESHOP_SCOPE_KEY
from simulator.state import SimState
from simulator.store import ChangeFeed, Entity, EshopData
from simulator.timefmt import parse_query_time, shoptet_time

Model = TypeVar("Model", bound=BaseModel)
T = TypeVar("T")
SHOPTET_TIME = "%Y-%m-%dT%H:%M:%S%z"


# The two dependencies below are ``async def`` although they never wait: FastAPI runs a plain
# ``def`` dependency in a thread pool, and that hop on every request was a tenth of the
# simulator's time (the benchmarks run it on the same two cores as the worker).


async def get_state(request: Request) -> SimState:
    state: SimState = request.app.state.sim
    return state


async def current_eshop(request: Request) -> EshopData:
    """The e-shop the gateway resolved from the request's token."""
    eshop: EshopData = request.scope[ESHOP_SCOPE_KEY]
    return eshop


def int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise ShoptetError(400, "invalid-parameter", f'Invalid "{name}" parameter: integer expected.', name) from exc


#: Shoptet's cap on the codes of one ``orderCodes`` / ``productCodes`` / ``productGuids`` filter.
MAX_LISTED_CODES = 50


def codes_param(request: Request, name: str) -> set[str] | None:
    """A comma-separated code list (``orderCodes`` and the like): None when not given."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    codes = [code for code in raw.split(",") if code]
    if not codes:
        raise ShoptetError(400, "missing-parameter", f'Missing value for parameter "{name}".', name)
    if len(codes) > MAX_LISTED_CODES:
        message = f'Invalid "{name}" parameter. Expected max. {MAX_LISTED_CODES} elements, but {len(codes)} given.'
        raise ShoptetError(400, "invalid-parameter", message, name)
    return set(codes)


def time_param(request: Request, name: str, *, required: bool = False) -> datetime | None:
    raw = request.query_params.get(name)
    if not raw:
        if required:
            raise ShoptetError(400, "missing-parameter", f'Missing value for parameter "{name}".', name)
        return None
    try:
        return parse_query_time(raw)
    except ValueError as exc:
        raise ShoptetError(400, "invalid-parameter", f'Invalid "{name}" parameter: ISO 8601 expected.', name) from exc


TIME_FILTERS = (
    ("creationTimeFrom", "creationTime", operator.ge),
    ("creationTimeTo", "creationTime", operator.le),
    ("changeTimeFrom", "changeTime", operator.ge),
    ("changeTimeTo", "changeTime", operator.le),
)


@lru_cache(maxsize=500_000)
def _parse_time(value: str) -> datetime:
    """Entity times parsed once: a list page filters every order of the shop, and ``strptime`` on
    10,000 orders per page made the simulator, not Shoptet's latency, the benchmarks' bottleneck."""
    return datetime.strptime(value, SHOPTET_TIME)


def filter_by_time(request: Request, entities: list[Entity]) -> list[Entity]:
    """``creationTimeFrom/To`` and ``changeTimeFrom/To``, inclusive, as orders and products accept them."""
    for name, field, keep in TIME_FILTERS:
        bound = time_param(request, name)
        if bound is not None:
            entities = [e for e in entities if keep(_parse_time(e[field]), bound)]
    return entities


def changes_response(request: Request, feed: ChangeFeed, id_name: str, default: int, maximum: int) -> Response:
    """``GET /api/{orders,products}/changes``: one page of the feed since ``from`` (``changeType`` filters)."""
    start = time_param(request, "from", required=True)
    assert start is not None
    entries = feed.since(start, request.query_params.get("changeType") or None)
    page, paginator = paginate(request, entries, default, maximum)
    changes = [{id_name: key, "changeTime": shoptet_time(when), "changeType": kind} for key, when, kind in page]
    return envelope_response({"changes": changes, "paginator": paginator})


def paginate(request: Request, items: Sequence[T], default: int, maximum: int) -> tuple[list[T], dict[str, int]]:
    """Slice one page; ``itemsPerPage`` above the endpoint's maximum is clamped, as Shoptet does."""
    page = max(1, int_param(request, "page") or 1)
    per_page = int_param(request, "itemsPerPage") or default
    per_page = min(max(1, per_page), maximum)
    start = (page - 1) * per_page
    chunk = list(items[start : start + per_page])
    paginator = {
        "totalCount": len(items),
        "page": page,
        "pageCount": math.ceil(len(items) / per_page),
        "itemsOnPage": len(chunk),
        "itemsPerPage": per_page,
    }
    return chunk, paginator


def json_body(model: type[Model]) -> Callable[[Request], Awaitable[Model]]:
    """A dependency parsing the body as ``model`` whatever the Content-Type (admin clients often reuse
    a client configured with Shoptet's ``application/vnd.shoptet.v1.0``)."""

    async def dependency(request: Request) -> Model:
        return await read_body(request, model)

    return dependency


async def read_body(request: Request, model: type[Model]) -> Model:
    """Parse a Shoptet request body (sent as ``application/vnd.shoptet.v1.0``); invalid -> 422."""
    body = await request.body()
    raw: Any = parse_json_body(body) if body else {}
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ShoptetError(422, "invalid-request-data", f"{where}: {first['msg']}", where) from exc
