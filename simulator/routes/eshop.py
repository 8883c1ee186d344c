"""``GET /api/eshop`` with the ``orderStatuses``, ``paymentMethods`` and ``shippingMethods`` sections."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from simulator.envelope import envelope_response
from simulator.routes.deps import current_eshop
from simulator.store import Entity, EshopData
from simulator.views import includes

router = APIRouter()


def _methods(methods: list[Entity], default_key: str) -> Entity:
    listed = [{"guid": m["guid"], "order": m["priority"], "name": m["name"], "visible": m["visible"]} for m in methods]
    return {
        "retail": {"methods": listed, default_key: methods[0]["guid"] if methods else None},
        "wholesale": {"methods": [], default_key: None},
        "wholesaleActive": False,
    }


def eshop_info(eshop: EshopData, wanted: set[str]) -> Entity:
    data: Entity = {
        "contactInformation": {
            "eshopId": eshop.eshop_id,
            "eshopName": eshop.name,
            "eshopCategory": None,
            "url": eshop.url,
            "eshopTitle": eshop.name,
            "eshopSubtitle": None,
            "contactPerson": "Sim Owner",
            "email": eshop.contact_email,
            "phone": None,
            "mobilePhone": None,
            "skypeAccount": None,
            "contactPhotoUrl": None,
        },
        "settings": {
            "vatPayer": True,
            "cashDeskOnly": False,
            "trackStockClaims": True,
            "maxProductAmount": 9999,
            "maxEmailAmount": 1000,
            "defaultPricelist": {"id": 1, "name": "Default"},
            "eshopLanguage": "cs",
            "timezone": "UTC",
            "dateFormat": "d.m.Y",
            "timeFormat": "H:i:s",
            "internals": "",
            "exchangeRateFlip": False,
            "negativeStockAmount": "allowed",
            "oss": False,
            "stockControlDisabled": False,
            "wholesaleSplitActive": False,
        },
        "currencies": [
            {
                "code": "CZK",
                "title": "Czech crown",
                "isDefault": True,
                "isDefaultAdmin": True,
                "isDefaultDocuments": True,
                "isVisible": True,
                "exchangeRate": "1.00000000",
                "priority": 1,
                "display": {"text": "Kc", "location": "right", "decimalsSeparator": ",", "thousandsSeparator": " "},
                "priceDecimalPlaces": 2,
                "documentPriceDecimalPlaces": 2,
                "rounding": "math",
                "minimalOrderValue": None,
                "bankAccount": {"accountNumber": None, "iban": None, "bic": None, "ownerName": None},
            }
        ],
        "taxClasses": [{"title": "Standard", "rates": [{"zone": "CZ", "vatRate": "21.00"}], "isDefault": True}],
        "activeModules": [{"title": "Stock", "name": "stock"}],
        "urls": [{"ident": "oauth", "url": f"{eshop.url}action/ApiOAuthServer/"}],
    }
    if "orderStatuses" in wanted:
        statuses = [dict(s) for s in eshop.statuses]
        data["orderStatuses"] = {"statuses": statuses, "defaultStatus": eshop.default_status_id}
    if "paymentMethods" in wanted:
        methods = _methods(eshop.payment_methods, "defaultPayment")
        data["paymentMethods"] = methods
    if "shippingMethods" in wanted:
        data["shippingMethods"] = _methods(eshop.shipping_methods, "defaultShipping")
    return data


@router.get("/api/eshop")
async def get_eshop(request: Request, eshop: EshopData = Depends(current_eshop)) -> Response:
    return envelope_response(eshop_info(eshop, includes(request.query_params.get("include"))))
