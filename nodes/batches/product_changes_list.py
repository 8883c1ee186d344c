"""shoptet-get-product-changes-list: every product change since the last run, one message each."""

from __future__ import annotations

from datetime import datetime

from nodes import shoptet
from nodes.paging import ListBatch


class ShoptetGetProductChangesList(ListBatch):
    """Items ``{changeType, changeTime, guid}``.

    Without a watermark it starts 30 days back: the feed keeps no more, and the API requires ``from``.
    """

    name = "shoptet-get-product-changes-list"
    path = "/api/products/changes"
    items_key = "changes"
    from_param = "from"
    last_run_key = shoptet.LAST_RUN_PRODUCT_CHANGES
    items_per_page = 1000
    empty_message = "No changes since last import."

    def default_from(self, now: datetime) -> str | None:
        return shoptet.format_time(now - shoptet.CHANGE_FEED_RETENTION)
