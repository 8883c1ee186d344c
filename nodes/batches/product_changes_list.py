"""shoptet-get-product-changes-list: every product change since the last run, one message each."""

from __future__ import annotations

from nodes import shoptet
from nodes.paging import ChangeFeedBatch


class ShoptetGetProductChangesList(ChangeFeedBatch):
    """Items ``{changeType, changeTime, guid}``.

    Without a watermark it starts 30 days back: the feed keeps no more, and the API requires ``from``.
    """

    name = "shoptet-get-product-changes-list"
    path = "/api/products/changes"
    item_id = "guid"
    last_run_key = shoptet.LAST_RUN_PRODUCT_CHANGES
