"""shoptet-get-order-changes-list: every order change since the last run, one message each."""

from __future__ import annotations

from nodes import shoptet
from nodes.paging import ChangeFeedBatch


class ShoptetGetOrderChangesList(ChangeFeedBatch):
    """Items ``{changeType, changeTime, code}``; the change-feed poll is the safety net for webhooks.

    Without a watermark it starts 30 days back: that is all the feed keeps, and ``from`` is required.
    """

    name = "shoptet-get-order-changes-list"
    path = "/api/orders/changes"
    item_id = "code"
    last_run_key = shoptet.LAST_RUN_ORDER_CHANGES
