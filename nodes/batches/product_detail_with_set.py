"""shoptet-product-detail-with-set: an order with every product set expanded into its components.

Warehouses and ERPs stock components, not sets, so the order they receive lists components.
"""

from __future__ import annotations

import asyncio
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict

from nodes.shoptet import data_of, parse_body, path_segment
from worker.envelope import Message
from worker.errors import StopError
from worker.node import Batch, Emit, NodeContext, NoOptions, Result

PRODUCT_SET = "product-set"
AMOUNT = Decimal("0.001")
PRICE = Decimal("0.01")


class OrderInput(BaseModel):
    """The order (``data.order`` of shoptet-get-order-detail); only ``items`` matters here."""

    model_config = ConfigDict(extra="allow")
    items: list[dict[str, Any]]


def _decimal(value: Any, what: str) -> Decimal:
    try:
        return Decimal(str(value if value is not None else 0))
    except InvalidOperation as exc:
        raise StopError(f"{what} is not a number: {value!r}") from exc


def _counted(item: dict[str, Any]) -> bool:
    """Whether a set line has an amount to multiply its components by. Shoptet's ``amount`` may be
    null: read as 0, the set became lines of amount 0 and price 0, and a warehouse shipped nothing.
    An amount that is no number stops the message, as before."""
    raw = item.get("amount")
    if raw is None:
        return False
    amount = _decimal(raw, "set amount")
    if not amount.is_finite():
        raise StopError(f"set amount is not a number: {raw!r}")
    return amount > 0


def expand_sets(items: list[dict[str, Any]], components: list[list[dict[str, Any]] | None]) -> list[dict[str, Any]]:
    """Replace each set item by its components (``components[i]`` for the i-th set item; None
    keeps that set item as it is).

    A component's amount is its amount in the set times the set item's amount. A component whose
    code is already an ordered product line adds to that line's amount; the others become new
    ``product`` lines, merged by code across sets. The set's price (``itemPrice.withVat``) is split
    evenly over the units of its new lines (Orchesty's rule) as a unit price with 2 decimals; a
    line fed by several sets gets the weighted average.
    """
    sets = [item for item in items if item.get("itemType") == PRODUCT_SET]
    kept = {id(item) for item, parts in zip(sets, components, strict=True) if parts is None}
    out = [dict(item) for item in items if item.get("itemType") != PRODUCT_SET or id(item) in kept]
    products = {item["code"]: item for item in out if item.get("itemType") == "product" and item.get("code")}
    for set_item, parts in zip(sets, components, strict=True):
        if parts is None:
            continue
        set_amount = _decimal(set_item.get("amount"), "set amount")
        new_lines: list[tuple[dict[str, Any], Decimal]] = []
        for part in parts:
            code = str(part["code"])
            amount = _decimal(part.get("amount"), "component amount") * set_amount
            line = products.get(code)
            if line is not None and not line.get("_fromSet"):
                line["amount"] = str((_decimal(line.get("amount"), "amount") + amount).quantize(AMOUNT))
                continue
            new_lines.append(({"code": code, "productGuid": part.get("guid")}, amount))
        units = sum((amount for _, amount in new_lines), Decimal(0))
        set_price = _decimal((set_item.get("itemPrice") or {}).get("withVat"), "set price")
        unit_price = (set_price / units).quantize(PRICE, ROUND_HALF_UP) if units else Decimal(0)
        for fresh, amount in new_lines:
            line = products.get(fresh["code"])
            if line is None:
                line = {**fresh, "itemType": "product", "amount": "0", "_fromSet": True, "_value": Decimal(0)}
                products[fresh["code"]] = line
                out.append(line)
            total = _decimal(line["amount"], "amount") + amount
            line["_value"] += amount * unit_price
            line["amount"] = str(total.quantize(AMOUNT))
            unit = (line["_value"] / total).quantize(PRICE, ROUND_HALF_UP) if total else Decimal(0)
            line["itemPrice"] = {"withVat": str(unit)}
    for line in out:
        line.pop("_fromSet", None)
        line.pop("_value", None)
    return out


class ShoptetProductDetailWithSet(Batch):
    """Emits one message: the input order with its product sets expanded (see :func:`expand_sets`).

    GET /api/products/{productGuid}?include=setItems per set item, all within this one call (the
    client's limiter caps concurrency). Fix: Orchesty iterated set items over several hops and kept
    the partial results in a local data store; we keep nothing anywhere, so any replica can serve
    any message. An order without sets is emitted unchanged.

    A set line that cannot be expanded stays in the order as it is, with its price: its product
    was deleted since (no ``productGuid``, which Shoptet says need not name an existing product, or
    a 404), it lists no components, or the line has no amount (null). Dropped, the order lost the
    line and its price; stopped, it sat in trash, where a replay could not help.
    """

    name = "shoptet-product-detail-with-set"
    Options = NoOptions

    async def process(self, message: Message, ctx: NodeContext, emit: Emit) -> Result:
        order = parse_body(OrderInput, message.body, self.name)
        sets = [item for item in order.items if item.get("itemType") == PRODUCT_SET]
        if not sets:
            await emit(message.body)
            return Result(message="no product sets")
        client = ctx.require_shoptet()

        async def set_items(item: dict[str, Any]) -> list[dict[str, Any]] | None:
            guid = item.get("productGuid")
            if not guid or not _counted(item):
                return None
            try:
                envelope = await client.request(
                    "GET", f"/api/products/{path_segment(guid)}", params={"include": "setItems"}
                )
            except StopError as exc:
                if exc.status == 404:
                    return None
                raise
            parts = data_of(envelope).get("setItems") or []
            return list(parts) or None

        components = await asyncio.gather(*(set_items(item) for item in sets))
        expanded = {**message.body, "items": expand_sets(order.items, list(components))}
        await emit(expanded)
        unexpanded = [str(item.get("code")) for item, parts in zip(sets, components, strict=True) if parts is None]
        if unexpanded:
            ctx.log.warning("product sets kept unexpanded: deleted, without components or amount", codes=unexpanded)
            return Result(
                message=f"expanded {len(sets) - len(unexpanded)} product set(s); kept {', '.join(unexpanded)} "
                "as set lines (product deleted, without components or without a positive amount)"
            )
        return Result(message=f"expanded {len(sets)} product set(s)")
