"""``GET /api/payment-methods`` and ``GET /api/shipping-methods``."""

from __future__ import annotations

import copy

from fastapi import APIRouter, Depends
from starlette.responses import Response

from simulator.envelope import envelope_response
from simulator.routes.deps import current_eshop
from simulator.store import Entity, EshopData

router = APIRouter()


def _listing(key: str, methods: list[Entity]) -> Entity:
    return {
        key: copy.deepcopy(methods),
        "wholesaleActive": False,
        "wholesaleSplitActive": False,
        "defaultRetailMethod": methods[0]["guid"] if methods else None,
        "defaultWholesaleMethod": None,
    }


@router.get("/api/payment-methods")
async def payment_methods(eshop: EshopData = Depends(current_eshop)) -> Response:
    return envelope_response(_listing("paymentMethods", eshop.payment_methods))


@router.get("/api/shipping-methods")
async def shipping_methods(eshop: EshopData = Depends(current_eshop)) -> Response:
    return envelope_response(_listing("shippingMethods", eshop.shipping_methods))
