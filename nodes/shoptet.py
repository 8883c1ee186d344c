"""Shared helpers for the Shoptet nodes: dates, last-run watermarks, input validation, envelopes.

Everything a node would otherwise copy lives here, so each node module only says what is specific
to it (its request, its input model, its output).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from worker.errors import StopError

if TYPE_CHECKING:
    from applications.client import ShoptetClient
    from worker.envelope import Message
    from worker.node import NodeContext
    from worker.store import Install

# -- install settings (Orchesty's names, kept) ------------------------------------------------

LAST_RUN_ORDER_CHANGES = "lastRunListOrderChanges"
LAST_RUN_PRODUCT_CHANGES = "lastRunListProductChanges"
LAST_RUN_ORDERS = "lastRunListOrders"
LAST_RUN_PRODUCTS = "lastRunListProducts"
#: Per snapshot endpoint: the id of the last snapshot job requested without a filter (a full export).
FULL_SNAPSHOT_JOB = {
    "/api/orders/snapshot": "fullOrdersSnapshotJobId",
    "/api/products/snapshot": "fullProductsSnapshotJobId",
}

#: A stored watermark is read back this much earlier so that changes written while the previous
#: run was starting are listed again rather than lost (Orchesty's ``lastRunOffset``).
WATERMARK_OFFSET = timedelta(seconds=60)
#: Shoptet's change feeds keep 30 days; older ``from`` values are pointless.
CHANGE_FEED_RETENTION = timedelta(days=30)

#: The application a node falls back to when neither the topology nor the headers name one.
DEFAULT_APPLICATION = "shoptet-premium"

# -- dates ------------------------------------------------------------------------------------


def utcnow() -> datetime:
    """The current time; tests patch this one function to freeze the clock of every node."""
    return datetime.now(UTC)


def format_time(when: datetime) -> str:
    """UTC ``YYYY-MM-DDTHH:MM:SSZ``: Shoptet accepts it and it needs no URL encoding (no ``+``)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_COMPACT_OFFSET = re.compile(r"([+-]\d{2})(\d{2})$")


def parse_time(value: str) -> datetime:
    """Parse Shoptet's ISO 8601 variants (``Z``, ``+0100``, ``+01:00``, naive = UTC)."""
    text = value.strip().replace(" ", "T", 1)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    text = _COMPACT_OFFSET.sub(r"\1:\2", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise StopError(f"not a date-time: {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def normalize_time(value: str) -> str:
    """Any accepted date-time as Shoptet's UTC form (input ``from`` values, job times)."""
    return format_time(parse_time(value))


# -- watermarks ----------------------------------------------------------------------------------


def watermark_start(install: Install, key: str) -> str | None:
    """The stored last-run setting minus :data:`WATERMARK_OFFSET`, or None when never run."""
    stored = install.settings.get(key)
    if not stored:
        return None
    return format_time(parse_time(str(stored)) - WATERMARK_OFFSET)


async def save_watermark(ctx: NodeContext, key: str, value: str, install: Install | None = None) -> None:
    """Write one last-run setting atomically (never the whole install) and keep ``ctx`` in step."""
    target = install or ctx.require_install()
    await ctx.store.set_setting(target.user, target.application, key, value)
    target.settings[key] = value


# -- input validation ------------------------------------------------------------------------


def names_option(ctx: NodeContext, name: str) -> list[str] | None:
    """A topology option that lists names (``events``, ``endpoints``); None when not given.

    A single string was matched by substring (``"order:update" in "order:updated"``), so a typo
    in the topology filtered the wrong things in silence; it stops instead (trash, with the reason).
    """
    value = ctx.options.get(name)
    if value is None or value == []:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StopError(f"option `{name}` must be a list of names, got {value!r}")
    return list(dict.fromkeys(value))


M = TypeVar("M", bound=BaseModel)


class PatchData(BaseModel):
    """Shoptet's ``data`` of a PATCH: only the fields Shoptet knows, and at least one of them."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _not_empty(self) -> PatchData:
        if not self.model_fields_set:
            raise ValueError("needs at least one field to change")
        return self


def not_null(value: Any) -> Any:
    """A ``field_validator(mode="before")`` for a field Shoptet types without null: it may be left
    out, not sent as null (Shoptet answers 422, and a replay unchanged fails again)."""
    if value is None:
        raise ValueError("must not be null (leave it out instead)")
    return value


class EntityRef(BaseModel):
    """What the detail readers get besides the code or guid: a change-feed item's ``changeType``,
    a webhook's ``event`` and ``eventInstance``. Either can be older than the entity's deletion."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)
    eventInstance: str | None = None
    event: str | None = None
    changeType: str | None = None

    @field_validator("event")
    @classmethod
    def _one_entity(cls, event: str | None) -> str | None:
        # a mass event's eventInstance is a JSON list of codes: read as one code it was a 404, and
        # a 404 for a webhook means "deleted", so every order of the event was dropped unseen
        if event and ":mass" in event:
            raise ValueError(
                f"{event} names several entities (eventInstance is a JSON list) and this node reads one; "
                "Shoptet also sends the single event (such as order:update) for each of them: start the "
                "process on those"
            )
        return event

    @property
    def reported_deleted(self) -> bool:
        return self.changeType == "delete" or (self.event or "").endswith(":delete")

    @property
    def from_a_change(self) -> bool:
        return self.changeType is not None or self.event is not None


async def get_unless_deleted(
    client: ShoptetClient, path: str, ref: EntityRef, *, params: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """GET one order or product; None when it is gone: the change said so (no request is made),
    or Shoptet answers 404 to a change or webhook (deleted since). Fix: Orchesty fetched deleted
    entities too and failed on the 404, so every deletion in the change feed became an error for an
    operator to clear. A 404 for a code given by hand still stops (trash)."""
    if ref.reported_deleted:
        return None
    try:
        return await client.request("GET", path, params=params)
    except StopError as exc:
        if exc.status == 404 and ref.from_a_change:
            return None
        raise


def parse_body(model: type[M], body: Any, node: str) -> M:
    """Validate an input body; a bad one can never succeed, so it is a StopError (trash)."""
    try:
        return model.model_validate({} if body is None else body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors())
        raise StopError(f"{node}: invalid input body: {problems}", body=body) from None


def parse_cursor(model: type[M], message: Message, node: str) -> M:
    """The message's ``cursor`` header as ``model`` (defaults when absent); a cursor that is not
    JSON or does not fit can never succeed, so it is a StopError (trash)."""
    try:
        raw = message.cursor
    except ValueError as exc:
        raise StopError(f"{node}: cursor header is not JSON: {exc}") from exc
    return parse_body(model, raw or {}, f"{node} cursor")


def path_segment(value: str | int) -> str:
    """One URL path segment: order codes may hold letters, dashes, even slashes."""
    return quote(str(value), safe="")


def data_of(envelope: dict[str, Any], *keys: str) -> Any:
    """``envelope['data'][k1][k2]...``; a missing part means Shoptet answered something unexpected."""
    value: Any = envelope.get("data")
    path = "data"
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise StopError(f"Shoptet answer has no {path}.{key}", body=envelope)
        value = value[key]
        path = f"{path}.{key}"
    if value is None:
        raise StopError(f"Shoptet answer has no {path}", body=envelope)
    return value


def reported_errors(envelope: dict[str, Any]) -> list[dict[str, str]]:
    """The ``errors`` of a 200 answer (things Shoptet did not do although the call succeeded), each
    as ``{errorCode, message, instance}`` strings."""
    errors = envelope.get("errors")
    if not isinstance(errors, list):
        return []
    return [
        {key: str(e.get(key) or "") for key in ("errorCode", "message", "instance")}
        for e in errors
        if isinstance(e, dict)
    ]


# -- applications and clients ------------------------------------------------------------------


def application_for(ctx: NodeContext, message: Message) -> str:
    """The application a node without an install works for: topology option, header, default."""
    configured = ctx.options.get("application")
    if isinstance(configured, str) and configured:
        return configured
    return message.application or DEFAULT_APPLICATION


class ClientFactory(Protocol):
    """What the runtime puts in ``NodeContext.client_factory``: a ShoptetClient for an install.

    Called by nodes that find their install themselves (shoptet-job-finished-webhook); the
    runtime builds it with its shared httpx client, limiter, base URL and the install's application.
    """

    def __call__(self, install: Install) -> ShoptetClient: ...


def client_for(ctx: NodeContext, install: Install) -> ShoptetClient:
    """A client for an install a node found itself; also makes it the context's install/client."""
    current = ctx.shoptet
    if current is not None and (current.install.user, current.install.application) == (
        install.user,
        install.application,
    ):
        client = current
    else:
        factory: Callable[[Install], ShoptetClient] | None = ctx.client_factory
        if factory is None:
            raise StopError("the runtime gave this node no client_factory to call Shoptet with")
        client = factory(install)
    ctx.install = install
    ctx.shoptet = client
    return client
