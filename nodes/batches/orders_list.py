"""shoptet-get-orders-list: orders created since the last run (all of them on the first run)."""

from __future__ import annotations

from nodes import shoptet
from nodes.paging import ListBatch


class ShoptetGetOrdersList(ListBatch):
    """Items: the orders as the list endpoint returns them (``{code, ...}``).

    Shoptet clamps the orders page to 50 items; asking for 50 keeps ``pageCount`` honest.
    """

    name = "shoptet-get-orders-list"
    path = "/api/orders"
    items_key = "orders"
    item_id = "code"
    from_param = "creationTimeFrom"
    last_run_key = shoptet.LAST_RUN_ORDERS
    items_per_page = 50
    empty_message = "No new orders since last import."
