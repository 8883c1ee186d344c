"""shoptet-get-all-products: start a products snapshot job; output ``{jobId}``."""

from __future__ import annotations

from nodes import shoptet
from nodes.snapshot import SnapshotConnector


class ShoptetGetAllProducts(SnapshotConnector):
    """GET /api/products/snapshot from ``lastRunListProductChanges``, which the job's completion moves."""

    name = "shoptet-get-all-products"
    path = "/api/products/snapshot"
    watermark_key = shoptet.LAST_RUN_PRODUCT_CHANGES
