"""shoptet-get-products-list: products created since the last run (all of them on the first run)."""

from __future__ import annotations

from nodes import shoptet
from nodes.paging import ListBatch


class ShoptetGetProductsList(ListBatch):
    """Items: the products as the list endpoint returns them (``{guid, ...}``); 1000 per page max."""

    name = "shoptet-get-products-list"
    path = "/api/products"
    items_key = "products"
    item_id = "guid"
    from_param = "creationTimeFrom"
    last_run_key = shoptet.LAST_RUN_PRODUCTS
    items_per_page = 1000
    empty_message = "No new products since last import."
