"""In-memory data of the simulated e-shops: entities in Shoptet's detail shape plus change feeds.

Entities are kept as plain dicts in exactly the shape the detail endpoints return (with every
optional section present), so the list endpoints, snapshots and webhooks project from one source.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

Entity = dict[str, Any]


class ChangeFeed:
    """Last change per entity, oldest first, as Shoptet's ``/changes`` endpoints list them."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[datetime, str]] = {}

    def record(self, key: str, when: datetime, change_type: str) -> None:
        self._entries.pop(key, None)  # re-insert: dict order stays the order of last change
        self._entries[key] = (when, change_type)

    def since(self, start: datetime, change_type: str | None = None) -> list[tuple[str, datetime, str]]:
        return [
            (key, when, kind)
            for key, (when, kind) in self._entries.items()
            if when >= start and (change_type is None or kind == change_type)
        ]

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class EshopData:
    """One e-shop: identity, credentials, catalogue, orders and feeds."""

    eshop_id: int
    name: str
    url: str
    contact_email: str
    premium_token: str
    signature_key: str
    statuses: list[Entity]
    default_status_id: int
    payment_methods: list[Entity]
    shipping_methods: list[Entity]
    stocks: list[Entity]
    default_stock_id: int
    products: dict[str, Entity] = field(default_factory=dict)
    orders: dict[str, Entity] = field(default_factory=dict)
    stock_amounts: dict[tuple[int, str], Decimal] = field(default_factory=dict)
    variant_index: dict[str, str] = field(default_factory=dict)  # variant code -> product guid
    order_changes: ChangeFeed = field(default_factory=ChangeFeed)
    product_changes: ChangeFeed = field(default_factory=ChangeFeed)
    next_order_number: int = 1
    next_item_id: int = 1

    def status(self, status_id: int) -> Entity | None:
        return next((s for s in self.statuses if s["id"] == status_id), None)

    def variant(self, code: str) -> tuple[Entity, Entity] | None:
        """The (product, variant) holding a variant code."""
        product = self.products.get(self.variant_index.get(code, ""))
        if product is None:
            return None
        return product, next(v for v in product["variants"] if v["code"] == code)

    def add_product(self, product: Entity) -> None:
        self.products[product["guid"]] = product
        for variant in product["variants"]:
            self.variant_index[variant["code"]] = product["guid"]

    def stock_ids(self) -> Iterator[int]:
        return (stock["id"] for stock in self.stocks)
