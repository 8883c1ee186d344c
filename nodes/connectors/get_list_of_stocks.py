"""shoptet-get-list-of-stocks: the e-shop's stocks and its default stock id."""

from __future__ import annotations

from nodes.reference import ReferenceDataReader


class ShoptetGetListOfStocks(ReferenceDataReader):
    """Output: ``data`` = ``{stocks[], defaultStockId}``; runs for a disabled install too."""

    name = "shoptet-get-list-of-stocks"
    path = "/api/stocks"
