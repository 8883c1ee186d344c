"""shoptet-get-eshop-info: the e-shop's settings with order statuses, payment and shipping methods."""

from __future__ import annotations

from nodes.reference import ReferenceDataReader

INCLUDE = "orderStatuses,paymentMethods,shippingMethods"


class ShoptetGetEshopInfo(ReferenceDataReader):
    """Output: ``data``. Reference data only, so it also runs for a disabled (suspended) install."""

    name = "shoptet-get-eshop-info"
    path = "/api/eshop"
    params = {"include": INCLUDE}
