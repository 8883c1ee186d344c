"""shoptet-product-detail-with-set: product sets expanded into components, no state kept."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx
from nodes_fakes import Harness, envelope, error_body

from nodes.batches.product_detail_with_set import ShoptetProductDetailWithSet, expand_sets
from worker.envelope import ResultCode
from worker.errors import StopError

SET_A = "11111111-1111-1111-1111-111111111111"
SET_B = "22222222-2222-2222-2222-222222222222"


def item(code: str, amount: str, item_type: str = "product", **extra: Any) -> dict[str, Any]:
    return {"code": code, "amount": amount, "itemType": item_type, **extra}


def component(code: str, amount: str) -> dict[str, Any]:
    return {"guid": f"guid-{code}", "code": code, "amount": amount}


def expanded(code: str, amount: str, unit_price: str) -> dict[str, Any]:
    return {
        "code": code,
        "productGuid": f"guid-{code}",
        "itemType": "product",
        "amount": amount,
        "itemPrice": {"withVat": unit_price},
    }


def order(*items: dict[str, Any]) -> dict[str, Any]:
    return {"code": "2024000123", "email": "a@b.cz", "items": list(items)}


async def test_order_without_sets_is_emitted_unchanged(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    body = order(item("A", "1.000"), item(None, "1.000", "shipping"))  # type: ignore[arg-type]
    run = await harness.run(ShoptetProductDetailWithSet(), body)
    assert run.result.code == ResultCode.SUCCESS
    assert run.emitted == [body]
    assert len(shoptet_api.calls) == 0


async def test_sets_are_expanded_merged_and_priced(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    shoptet_api.get(f"/api/products/{SET_A}").mock(
        return_value=httpx.Response(
            200, json=envelope({"guid": SET_A, "setItems": [component("A", "2"), component("C", "1")]})
        )
    )
    shoptet_api.get(f"/api/products/{SET_B}").mock(
        return_value=httpx.Response(200, json=envelope({"guid": SET_B, "setItems": [component("C", "3")]}))
    )
    shipping = item(None, "1.000", "shipping", itemPrice={"withVat": "99.00"})  # type: ignore[arg-type]
    body = order(
        item("A", "1.000", itemPrice={"withVat": "10.00"}),
        item("SA", "2.000", "product-set", productGuid=SET_A, itemPrice={"withVat": "120.00"}),
        item("SB", "1.000", "product-set", productGuid=SET_B, itemPrice={"withVat": "30.00"}),
        shipping,
    )

    run = await harness.run(ShoptetProductDetailWithSet(), body)

    assert len(run.emitted) == 1
    out = run.emitted[0]
    assert out["code"] == "2024000123" and out["email"] == "a@b.cz"
    # A: 1 ordered + 2 x 2 from set A; C: 1 x 2 from set A (price 120 / 2 units = 60) + 3 from set B (30/3 = 10)
    assert out["items"] == [
        item("A", "5.000", itemPrice={"withVat": "10.00"}),
        shipping,
        {
            "code": "C",
            "productGuid": "guid-C",
            "itemType": "product",
            "amount": "5.000",
            "itemPrice": {"withVat": "30.00"},
        },
    ]
    for call in shoptet_api.calls:
        assert call.request.url.params["include"] == "setItems"
    assert body["items"][0]["amount"] == "1.000"  # the input is not mutated


def test_set_price_split_evenly_over_its_units() -> None:
    items = [item("S", "1", "product-set", productGuid=SET_A, itemPrice={"withVat": "100"})]
    out = expand_sets(items, [[component("X", "1"), component("Y", "3")]])
    assert out == [
        {
            "code": "X",
            "productGuid": "guid-X",
            "itemType": "product",
            "amount": "1.000",
            "itemPrice": {"withVat": "25.00"},
        },
        {
            "code": "Y",
            "productGuid": "guid-Y",
            "itemType": "product",
            "amount": "3.000",
            "itemPrice": {"withVat": "25.00"},
        },
    ]


async def test_a_set_that_cannot_be_expanded_stays_a_set_line(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    """Deleted since (a 404, or no productGuid: Shoptet says it need not name an existing product)
    or without components: the line stays as it is, price included. It was dropped (the order
    lost its price) or stopped in trash, where a replay could not help."""
    shoptet_api.get(f"/api/products/{SET_A}").mock(
        return_value=httpx.Response(404, json=error_body("product-not-found", "gone"))
    )
    shoptet_api.get(f"/api/products/{SET_B}").mock(
        return_value=httpx.Response(200, json=envelope({"guid": SET_B, "setItems": None}))
    )
    gone = item("SA", "1.000", "product-set", productGuid=SET_A, itemPrice={"withVat": "10.00"})
    empty = item("SB", "2.000", "product-set", productGuid=SET_B, itemPrice={"withVat": "20.00"})
    nameless = item("SC", "1.000", "product-set", productGuid=None, itemPrice={"withVat": "30.00"})
    body = order(item("A", "1.000"), gone, empty, nameless)

    run = await harness.run(ShoptetProductDetailWithSet(), body)

    assert run.emitted == [body]
    assert run.result.code == ResultCode.SUCCESS
    assert "kept SA, SB, SC as set lines" in (run.result.message or "")


async def test_a_set_line_without_an_amount_stays_a_set_line(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    """Shoptet's order item amount may be null: read as 0, the set became component lines of amount
    0 and price 0, and the warehouse got an order with the set silently gone."""
    route = shoptet_api.get(f"/api/products/{SET_A}").mock(
        return_value=httpx.Response(200, json=envelope({"guid": SET_A, "setItems": [{"code": "C", "amount": "1"}]}))
    )
    unamounted = {
        **item("SA", "1.000", "product-set", productGuid=SET_A, itemPrice={"withVat": "10.00"}),
        "amount": None,
    }
    body = order(item("A", "1.000"), unamounted)

    run = await harness.run(ShoptetProductDetailWithSet(), body)

    assert run.emitted == [body]
    assert route.call_count == 0
    assert "kept SA as set lines" in (run.result.message or "")


@pytest.mark.parametrize("amount", ["abc", "NaN"])
async def test_a_set_amount_that_is_no_number_stops(
    harness: Harness, shoptet_api: respx.MockRouter, amount: str
) -> None:
    odd = {**item("SA", "1.000", "product-set", productGuid=SET_A, itemPrice={"withVat": "10.00"}), "amount": amount}
    with pytest.raises(StopError, match="set amount is not a number"):
        await harness.run(ShoptetProductDetailWithSet(), order(item("A", "1.000"), odd))


async def test_a_set_product_that_fails_otherwise_stops(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    shoptet_api.get(f"/api/products/{SET_A}").mock(
        return_value=httpx.Response(403, json=error_body("forbidden", "no access"))
    )
    body = order(item("SA", "1.000", "product-set", productGuid=SET_A, itemPrice={"withVat": "1"}))
    with pytest.raises(StopError):
        await harness.run(ShoptetProductDetailWithSet(), body)
    with pytest.raises(StopError, match="invalid input body"):
        await harness.run(ShoptetProductDetailWithSet(), {"code": "1"})
