"""shoptet-get-shipping-methods: the e-shop's shipping methods."""

from __future__ import annotations

from nodes.reference import ReferenceDataReader


class ShoptetGetShippingMethods(ReferenceDataReader):
    """Output: ``data``; runs for a disabled install too (reference data only)."""

    name = "shoptet-get-shipping-methods"
    path = "/api/shipping-methods"
