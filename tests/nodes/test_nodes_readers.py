"""Readers: one request, one output message; both applications (the harness is parametrised)."""

from __future__ import annotations

import pytest
import respx
from nodes_cases import Case, Exchange, play
from nodes_fakes import Harness, envelope, error_body

from nodes.connectors.get_eshop_info import ShoptetGetEshopInfo
from nodes.connectors.get_list_of_stocks import ShoptetGetListOfStocks
from nodes.connectors.get_order_detail import ShoptetGetOrderDetail
from nodes.connectors.get_payment_methods import ShoptetGetPaymentMethods
from nodes.connectors.get_product_detail import ShoptetGetProductDetail
from nodes.connectors.get_shipping_methods import ShoptetGetShippingMethods
from worker.envelope import ResultCode
from worker.errors import RetryableError, StopError
from worker.node import Connector

ESHOP = {"contactInformation": {"eshopId": 222651}, "orderStatuses": {"statuses": []}}
STOCKS = {"stocks": [{"id": 1, "title": "Main"}], "defaultStockId": 1}
PAYMENTS = {"paymentMethods": [{"guid": "p-1", "name": "Card"}], "wholesaleActive": False}
SHIPPINGS = {"shippingMethods": [{"guid": "s-1", "name": "PPL"}], "wholesaleActive": False}
ORDER = {"code": "2024000123", "items": [], "notes": {"eshopRemark": None}}
PRODUCT = {"guid": "8f3c9b2e-1b1a-11e9-a2b5-0800274f0a5c", "name": "Mug"}
ORDER_INCLUDE = {"include": "shippingDetails,notes,surchargeParameters"}
WEBHOOK = {"eshopId": 222651, "event": "order:create", "eventCreated": "2024-05-20T10:00:00+0200"}

CASES = [
    Case(
        "eshop-info",
        ShoptetGetEshopInfo,
        None,
        [
            Exchange(
                "GET",
                "/api/eshop",
                response=envelope(ESHOP),
                params={"include": "orderStatuses,paymentMethods,shippingMethods"},
            )
        ],
        output=ESHOP,
    ),
    Case(
        "eshop-info-500",
        ShoptetGetEshopInfo,
        None,
        [Exchange("GET", "/api/eshop", 500, params={"include": "orderStatuses,paymentMethods,shippingMethods"})],
        raises=RetryableError,
    ),
    Case("stocks", ShoptetGetListOfStocks, {}, [Exchange("GET", "/api/stocks", response=envelope(STOCKS))], STOCKS),
    Case("stocks-429", ShoptetGetListOfStocks, {}, [Exchange("GET", "/api/stocks", 429)], raises=RetryableError),
    Case(
        "shipping-methods",
        ShoptetGetShippingMethods,
        None,
        [Exchange("GET", "/api/shipping-methods", response=envelope(SHIPPINGS))],
        SHIPPINGS,
    ),
    Case(
        "shipping-methods-403",
        ShoptetGetShippingMethods,
        None,
        [Exchange("GET", "/api/shipping-methods", 403, error_body("forbidden", "no access"))],
        raises=StopError,
    ),
    # Orchesty quirk kept: the whole body, not data.
    Case(
        "payment-methods-whole-body",
        ShoptetGetPaymentMethods,
        None,
        [Exchange("GET", "/api/payment-methods", response=envelope(PAYMENTS))],
        envelope(PAYMENTS),
    ),
    Case(
        "payment-methods-503",
        ShoptetGetPaymentMethods,
        None,
        [Exchange("GET", "/api/payment-methods", 503)],
        raises=RetryableError,
    ),
    Case(
        "order-detail-by-code",
        ShoptetGetOrderDetail,
        {"code": "2024000123", "changeType": "edit", "changeTime": "2024-05-20T10:00:00+0200"},
        [Exchange("GET", "/api/orders/2024000123", response=envelope({"order": ORDER}), params=ORDER_INCLUDE)],
        ORDER,
    ),
    Case(
        "order-detail-from-webhook",
        ShoptetGetOrderDetail,
        {**WEBHOOK, "eventInstance": "2024000123"},
        [Exchange("GET", "/api/orders/2024000123", response=envelope({"order": ORDER}), params=ORDER_INCLUDE)],
        ORDER,
    ),
    Case(
        "order-detail-code-is-escaped",
        ShoptetGetOrderDetail,
        {"code": "OBJ/24 1"},
        [Exchange("GET", "/api/orders/OBJ%2F24%201", response=envelope({"order": ORDER}), params=ORDER_INCLUDE)],
        ORDER,
    ),
    Case(
        "order-detail-404",
        ShoptetGetOrderDetail,
        {"code": "404"},
        [Exchange("GET", "/api/orders/404", 404, error_body("order-not-found", "not found"), ORDER_INCLUDE)],
        raises=StopError,
    ),
    Case(
        "order-detail-deleted-in-the-change-feed-is-not-fetched",
        ShoptetGetOrderDetail,
        {"code": "2024000123", "changeType": "delete", "changeTime": "2024-05-20T10:00:00+0200"},
        [],
        code=ResultCode.DO_NOT_CONTINUE,
        message="order 2024000123 is deleted in Shoptet",
    ),
    Case(
        "order-detail-delete-webhook-is-not-fetched",
        ShoptetGetOrderDetail,
        {**WEBHOOK, "event": "order:delete", "eventInstance": "2024000123"},
        [],
        code=ResultCode.DO_NOT_CONTINUE,
        message="order 2024000123 is deleted in Shoptet",
    ),
    Case(
        "order-detail-404-for-a-change-means-deleted-since",
        ShoptetGetOrderDetail,
        {"code": "404", "changeType": "edit", "changeTime": "2024-05-20T10:00:00+0200"},
        [Exchange("GET", "/api/orders/404", 404, error_body("order-not-found", "not found"), ORDER_INCLUDE)],
        code=ResultCode.DO_NOT_CONTINUE,
        message="order 404 is deleted in Shoptet",
    ),
    Case(
        "order-detail-404-for-a-webhook-means-deleted-since",
        ShoptetGetOrderDetail,
        {**WEBHOOK, "eventInstance": "404"},
        [Exchange("GET", "/api/orders/404", 404, error_body("order-not-found", "not found"), ORDER_INCLUDE)],
        code=ResultCode.DO_NOT_CONTINUE,
    ),
    Case("order-detail-no-code", ShoptetGetOrderDetail, {"foo": 1}, [], raises=StopError),
    Case("order-detail-body-not-object", ShoptetGetOrderDetail, ["x"], [], raises=StopError),
    Case(
        "product-detail",
        ShoptetGetProductDetail,
        {"guid": PRODUCT["guid"], "changeType": "edit"},
        [Exchange("GET", f"/api/products/{PRODUCT['guid']}", response=envelope(PRODUCT))],
        PRODUCT,
    ),
    Case(
        "product-detail-404",
        ShoptetGetProductDetail,
        {"guid": "missing"},
        [Exchange("GET", "/api/products/missing", 404, error_body("product-not-found", "not found"))],
        raises=StopError,
    ),
    Case(
        "product-detail-deleted-in-the-change-feed-is-not-fetched",
        ShoptetGetProductDetail,
        {"guid": "gone", "changeType": "delete"},
        [],
        code=ResultCode.DO_NOT_CONTINUE,
        message="product gone is deleted in Shoptet",
    ),
    Case(
        "product-detail-404-for-a-change-means-deleted-since",
        ShoptetGetProductDetail,
        {"guid": "missing", "changeType": "edit"},
        [Exchange("GET", "/api/products/missing", 404, error_body("product-not-found", "not found"))],
        code=ResultCode.DO_NOT_CONTINUE,
    ),
    Case("product-detail-no-guid", ShoptetGetProductDetail, {}, [], raises=StopError),
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
async def test_reader(case: Case, harness: Harness, shoptet_api: respx.MockRouter) -> None:
    await play(case, harness, shoptet_api)


def test_reference_data_readers_accept_a_disabled_install() -> None:
    assert ShoptetGetEshopInfo.accepts_disabled_install
    assert ShoptetGetListOfStocks.accepts_disabled_install
    assert ShoptetGetShippingMethods.accepts_disabled_install
    assert ShoptetGetPaymentMethods.accepts_disabled_install  # eshop-reference-data lost it for a suspended shop
    assert not ShoptetGetOrderDetail.accepts_disabled_install


async def test_bad_input_message_is_clear(harness: Harness) -> None:
    with pytest.raises(StopError, match="shoptet-get-order-detail: invalid input body"):
        await harness.run(ShoptetGetOrderDetail(), {"code": None})


@pytest.mark.parametrize(
    ("node", "event", "instance"),
    [
        (ShoptetGetOrderDetail, "order:massUpdate", '["2024000001","2024000002"]'),
        (ShoptetGetProductDetail, "product:massCreate", '["guid-1","guid-2"]'),
    ],
)
async def test_a_mass_webhook_is_refused_not_taken_for_a_deleted_entity(
    harness: Harness, shoptet_api: respx.MockRouter, node: type[Connector], event: str, instance: str
) -> None:
    """A mass event's eventInstance is a list of codes: read as one code it was a 404, which for a
    webhook means "deleted", and every order of the event was dropped with nothing in trash."""
    body = {**WEBHOOK, "event": event, "eventInstance": instance}
    with pytest.raises(StopError, match=f"{event} names several entities"):
        await harness.run(node(), body)
    assert not shoptet_api.calls
