"""shoptet-get-order-changes-list: every order change since the last run, one message each."""

from __future__ import annotations

from datetime import datetime

from nodes import shoptet
from nodes.paging import ListBatch


class ShoptetGetOrderChangesList(ListBatch):
    """Items ``{changeType, changeTime, code}``; the change-feed poll is the safety net for webhooks.

    Without a watermark it starts 30 days back: that is all the feed keeps, and ``from`` is required.
    """

    name = "shoptet-get-order-changes-list"
    path = "/api/orders/changes"
    items_key = "changes"
    from_param = "from"
    last_run_key = shoptet.LAST_RUN_ORDER_CHANGES
    items_per_page = 1000
    empty_message = "No changes since last import."

    def default_from(self, now: datetime) -> str | None:
        return shoptet.format_time(now - shoptet.CHANGE_FEED_RETENTION)
