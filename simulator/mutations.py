"""Changes to e-shop data, shared by the Shoptet API writes and the admin API.

Every change goes through here so that it always leaves the traces a real change leaves: a new
``changeTime``, a change-feed entry and the matching webhook.
"""

from __future__ import annotations

import copy
from decimal import Decimal, InvalidOperation
from typing import Any

from simulator.envelope import ShoptetError, not_found
from simulator.state import SimState
from simulator.store import Entity, EshopData
from simulator.timefmt import now, shoptet_time


def get_order(eshop: EshopData, code: str) -> Entity:
    order = eshop.orders.get(code)
    if order is None:
        raise not_found("order-not-found", f'Order with code "{code}" not found.', code)
    return order


def touch_order(state: SimState, eshop: EshopData, order: Entity, *, paid_before: bool | None = None) -> None:
    moment = now()
    order["changeTime"] = shoptet_time(moment)
    eshop.order_changes.record(order["code"], moment, "edit")
    state.webhooks.emit(eshop, "order:update", order["code"])
    if paid_before is False and order["paid"]:
        state.webhooks.emit(eshop, "order:paid", order["code"])


def create_order(state: SimState, eshop: EshopData, overrides: dict[str, Any]) -> Entity:
    order = state.seeder.add_order(eshop, state.rng, now(), overrides)
    state.webhooks.emit(eshop, "order:create", order["code"])
    return order


def delete_order(state: SimState, eshop: EshopData, code: str) -> None:
    get_order(eshop, code)
    del eshop.orders[code]
    eshop.order_changes.record(code, now(), "delete")
    state.webhooks.emit(eshop, "order:delete", code)


def change_order(
    state: SimState,
    eshop: EshopData,
    order: Entity,
    *,
    status_id: int | None = None,
    paid: bool | None = None,
    billing_method_id: int | None = None,
    fields: dict[str, Any] | None = None,
) -> None:
    """Status, payment flag, billing method and plain fields (email, phone, notes) in one change.

    A change that changes nothing leaves no trace (Shoptet: "If you try to set the status that the
    order already has, no change is done"); a status set to Cancelled also emits ``order:cancel``.
    """
    paid_before = bool(order["paid"])
    before = _snapshot(order)
    if status_id is not None:
        status = eshop.status(status_id)
        if status is None:
            raise not_found("order-status-not-found", f"Order status {status_id} not found.", "statusId")
        order["status"] = {"name": status["name"], "id": status["id"]}
        for item in order["items"]:
            item["status"] = dict(order["status"])
        if status["markAsPaid"]:
            order["paid"] = True
    if paid is not None:
        order["paid"] = paid
    if billing_method_id is not None:
        names = {1: "COD", 2: "Wire transfer", 3: "Cash", 4: "Card"}
        if billing_method_id not in names:
            raise ShoptetError(422, "invalid-request-data", "Unknown billing method.", "billingMethodId")
        order["billingMethod"] = {"id": billing_method_id, "name": names[billing_method_id]}
    for key, value in (fields or {}).items():
        if key in ("customerRemark", "eshopRemark", "trackingNumber"):
            order["notes"][key] = value
        elif key == "additionalFields":
            texts = {f["index"]: f.get("text") for f in value}
            for field in order["notes"]["additionalFields"]:
                field["text"] = texts.get(field["index"], field["text"])
        else:
            order[key] = value
    if _snapshot(order) == before:
        return
    touch_order(state, eshop, order, paid_before=paid_before)
    if order["status"]["id"] == CANCELLED_STATUS_ID and before["status"]["id"] != CANCELLED_STATUS_ID:
        state.webhooks.emit(eshop, "order:cancel", order["code"])


#: Shoptet's system status "Cancelled".
CANCELLED_STATUS_ID = -4


def _snapshot(order: Entity) -> Entity:
    """What a change can touch, copied, to tell whether it touched anything."""
    return copy.deepcopy({k: v for k, v in order.items() if k != "changeTime"})


def move_stock(state: SimState, eshop: EshopData, stock_id: int, moves: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Apply stock movements; returns one error per refused row (unknown code, product set)."""
    if stock_id not in set(eshop.stock_ids()):
        raise not_found("stock-not-found", f"Stock {stock_id} not found.", str(stock_id))
    errors: list[dict[str, str]] = []
    changed = False
    for move in moves:
        code = str(move.get("productCode", ""))
        found = eshop.variant(code)
        if found is None:
            errors.append({"errorCode": "unknown-product", "message": f'Product "{code}" not found.', "instance": code})
            continue
        if found[0]["type"] == "product-set":
            errors.append(
                {
                    "errorCode": "stock-change-not-allowed",
                    "message": f'Stock change not allowed for product set "{code}".',
                    "instance": code,
                }
            )
            continue
        key = (stock_id, code)
        try:
            if "amountChange" in move:
                eshop.stock_amounts[key] = eshop.stock_amounts.get(key, Decimal(0)) + Decimal(str(move["amountChange"]))
            else:
                eshop.stock_amounts[key] = Decimal(str(move.get("quantity", move.get("realStock"))))
        except InvalidOperation:
            errors.append({"errorCode": "invalid-request-data", "message": "Amount is not a number.", "instance": code})
            continue
        changed = True
    if changed:
        state.webhooks.emit(eshop, "stock:movement", str(stock_id))
    return errors


def create_product(state: SimState, eshop: EshopData) -> Entity:
    product = state.seeder.add_product(eshop, state.rng, len(eshop.products) + 1, now())
    state.webhooks.emit(eshop, "product:create", product["guid"])
    return product


def change_product(state: SimState, eshop: EshopData, guid: str, fields: dict[str, Any]) -> Entity:
    """Change plain product fields (name, visibility, descriptions): change feed ``edit`` + product:update."""
    product = eshop.products.get(guid)
    if product is None:
        raise not_found("product-not-found", f'Product with guid "{guid}" not found.', guid)
    product.update(fields)
    moment = now()
    product["changeTime"] = shoptet_time(moment)
    eshop.product_changes.record(guid, moment, "edit")
    state.webhooks.emit(eshop, "product:update", guid)
    return product
