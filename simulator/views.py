"""Projections of stored entities into the shapes each endpoint returns.

The store keeps the richest shape; here optional sections are dropped unless ``include`` asks for
them, exactly as Shoptet's "section on demand" works. Views share nested values with the store
(no deep copies on the hot path): they are serialised at once and must not be mutated.
"""

from __future__ import annotations

from decimal import Decimal

from simulator.seed import amount
from simulator.store import Entity, EshopData

ORDER_SECTIONS = ("shippingDetails", "notes", "paymentTransactions")
ORDER_ITEM_SECTIONS = ("surchargeParameters",)
PRODUCT_SECTIONS = ("setItems",)


#: Section names by their lower case: Shoptet reads ``include`` with "no upper/lower case
#: differentiation".
_SECTIONS = {name.lower(): name for name in (*ORDER_SECTIONS, *ORDER_ITEM_SECTIONS, *PRODUCT_SECTIONS)}


def includes(raw: str | None) -> set[str]:
    parts = (part.strip() for part in (raw or "").split(","))
    return {_SECTIONS.get(part.lower(), part) for part in parts if part}


def order_detail(order: Entity, wanted: set[str]) -> Entity:
    view = {k: v for k, v in order.items() if k not in ORDER_SECTIONS or k in wanted}
    view["items"] = [
        {k: v for k, v in item.items() if k not in ORDER_ITEM_SECTIONS or k in wanted} for item in order["items"]
    ]
    return view


def order_list_item(order: Entity) -> Entity:
    return {
        "code": order["code"],
        "guid": order["guid"],
        "creationTime": order["creationTime"],
        "changeTime": order["changeTime"],
        "fullName": order["billingAddress"]["fullName"],
        "company": order["billingAddress"]["company"],
        "email": order["email"],
        "phone": order["phone"],
        "remark": order["notes"]["customerRemark"],
        "customerGuid": order["customerGuid"],
        "cashDeskOrder": order["cashDeskOrder"],
        "adminUrl": order["adminUrl"],
        "status": dict(order["status"]),
        "source": dict(order["source"]),
        "shipping": dict(order["shipping"]),
        "paymentMethod": dict(order["paymentMethod"]),
        "price": dict(order["price"]),
        "paid": order["paid"],
    }


def variant_stock(eshop: EshopData, product: Entity, code: str) -> Decimal:
    """Sum over stocks; a product set has as many pieces as its scarcest component allows."""
    if product["type"] != "product-set":
        return sum((eshop.stock_amounts.get((s, code), Decimal(0)) for s in eshop.stock_ids()), Decimal(0))
    counts = []
    for item in product["setItems"] or []:
        component = eshop.products.get(item["guid"])
        if component is None:
            return Decimal(0)
        have = variant_stock(eshop, component, item["code"])
        counts.append((have // Decimal(item["amount"])).max(Decimal(0)))
    return min(counts, default=Decimal(0))


def product_detail(eshop: EshopData, product: Entity, wanted: set[str]) -> Entity:
    view = {k: v for k, v in product.items() if k not in PRODUCT_SECTIONS or k in wanted}
    if "setItems" in wanted and view.get("setItems") is None:
        view["setItems"] = []
    view["variants"] = [
        {**variant, "stock": amount(variant_stock(eshop, product, variant["code"]))} for variant in product["variants"]
    ]
    return view


def product_list_item(product: Entity) -> Entity:
    return {
        "guid": product["guid"],
        "name": product["name"],
        "type": product["type"],
        "url": product["url"],
        "visibility": product["visibility"],
        "creationTime": product["creationTime"],
        "changeTime": product["changeTime"],
        "brand": product["brand"],
        "supplier": product["supplier"],
        "defaultCategory": dict(product["defaultCategory"]),
    }
