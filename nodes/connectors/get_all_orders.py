"""shoptet-get-all-orders: start an orders snapshot job; output ``{jobId}``."""

from __future__ import annotations

from nodes import shoptet
from nodes.snapshot import SnapshotConnector


class ShoptetGetAllOrders(SnapshotConnector):
    """GET /api/orders/snapshot with shipping details, notes and surcharge parameters.

    From ``lastRunListOrderChanges``, which the job's completion moves (see
    :class:`~nodes.snapshot.SnapshotConnector`).
    """

    name = "shoptet-get-all-orders"
    path = "/api/orders/snapshot"
    watermark_key = shoptet.LAST_RUN_ORDER_CHANGES
    include = "shippingDetails,notes,surchargeParameters"
