"""The admin API under ``/_sim/``: drive the data and the simulator, never counted as Shoptet traffic.

Tests use it to cause what a merchant or customer would (a new order, a status change, a stock
movement), which produces change-feed entries and webhooks exactly as API writes do.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from simulator.config import RuntimeConfigUpdate
from simulator.envelope import ShoptetError
from simulator.mutations import (
    change_order,
    change_product,
    create_order,
    create_product,
    delete_order,
    get_order,
    move_stock,
)
from simulator.routes.deps import get_state, json_body
from simulator.routes.stocks import Movement
from simulator.state import SimState
from simulator.views import order_detail, product_detail

router = APIRouter(prefix="/_sim")


class EshopRef(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    eshop_id: int | None = Field(default=None, alias="eshopId", description="default: the first e-shop")


class NewCode(EshopRef):
    redirect_uri: str | None = Field(default=None, alias="redirectUri")


class OrderFields(EshopRef):
    status_id: int | None = Field(default=None, alias="statusId")
    paid: bool | None = None
    email: str | None = None
    phone: str | None = None
    customer_remark: str | None = Field(default=None, alias="customerRemark")
    eshop_remark: str | None = Field(default=None, alias="eshopRemark")
    tracking_number: str | None = Field(default=None, alias="trackingNumber")


class ProductFields(EshopRef):
    name: str | None = None
    visibility: str | None = None
    short_description: str | None = Field(default=None, alias="shortDescription")
    description: str | None = None


class StockChange(EshopRef):
    data: list[Movement] = Field(min_length=1)


class ClockAdvance(BaseModel):
    seconds: float = Field(gt=0)


@router.get("/eshops")
async def eshops(state: SimState = Depends(get_state)) -> list[dict[str, Any]]:
    """Every seeded e-shop with its credentials: what the demo and the tests log in with."""
    return [
        {
            "eshopId": e.eshop_id,
            "name": e.name,
            "url": e.url,
            "premiumToken": e.premium_token,
            "signatureKey": e.signature_key,
            "orders": len(e.orders),
            "products": len(e.products),
        }
        for e in state.eshops
    ]


@router.post("/oauth/codes", status_code=201)
async def new_install_code(
    body: NewCode = Depends(json_body(NewCode)), state: SimState = Depends(get_state)
) -> dict[str, Any]:
    eshop = state.eshop(body.eshop_id)
    code = state.oauth.create_code(eshop.eshop_id, body.redirect_uri)
    return {"code": code, "eshopId": eshop.eshop_id, "clientId": state.config.oauth_client_id}


@router.post("/orders", status_code=201)
async def new_order(
    body: OrderFields = Depends(json_body(OrderFields)), state: SimState = Depends(get_state)
) -> dict[str, Any]:
    eshop = state.eshop(body.eshop_id)
    if body.status_id is not None and eshop.status(body.status_id) is None:
        raise ShoptetError(422, "invalid-request-data", f"Unknown status {body.status_id}.", "statusId")
    overrides = body.model_dump(by_alias=True, exclude_none=True, exclude={"eshop_id"})
    order = create_order(state, eshop, overrides)
    return {"code": order["code"], "order": order_detail(order, {"notes", "shippingDetails"})}


@router.patch("/orders/{code}")
async def change_order_admin(
    code: str, body: OrderFields = Depends(json_body(OrderFields)), state: SimState = Depends(get_state)
) -> dict[str, Any]:
    eshop = state.eshop(body.eshop_id)
    order = get_order(eshop, code)
    plain = body.model_dump(by_alias=True, exclude_none=True, exclude={"eshop_id", "status_id", "paid"})
    change_order(state, eshop, order, status_id=body.status_id, paid=body.paid, fields=plain)
    return {"code": code, "order": order_detail(order, {"notes", "shippingDetails"})}


@router.delete("/orders/{code}")
async def delete_order_admin(
    code: str, eshopId: int | None = None, state: SimState = Depends(get_state)
) -> dict[str, Any]:
    delete_order(state, state.eshop(eshopId), code)
    return {"code": code, "deleted": True}


@router.post("/products", status_code=201)
async def new_product(
    body: EshopRef = Depends(json_body(EshopRef)), state: SimState = Depends(get_state)
) -> dict[str, Any]:
    eshop = state.eshop(body.eshop_id)
    product = create_product(state, eshop)
    return {"guid": product["guid"], "product": product_detail(eshop, product, {"setItems"})}


@router.patch("/products/{guid}")
async def change_product_admin(
    guid: str, body: ProductFields = Depends(json_body(ProductFields)), state: SimState = Depends(get_state)
) -> dict[str, Any]:
    eshop = state.eshop(body.eshop_id)
    fields = body.model_dump(by_alias=True, exclude_none=True, exclude={"eshop_id"})
    product = change_product(state, eshop, guid, fields)
    return {"guid": guid, "product": product_detail(eshop, product, {"setItems"})}


@router.patch("/stocks/{stockId}")
async def change_stock(
    stockId: int, body: StockChange = Depends(json_body(StockChange)), state: SimState = Depends(get_state)
) -> dict[str, Any]:
    eshop = state.eshop(body.eshop_id)
    errors = move_stock(state, eshop, stockId, [m.model_dump(exclude_unset=True) for m in body.data])
    return {"errors": errors}


@router.get("/config")
async def get_config(state: SimState = Depends(get_state)) -> dict[str, Any]:
    return state.config.model_dump(mode="json")


@router.put("/config")
async def put_config(
    body: RuntimeConfigUpdate = Depends(json_body(RuntimeConfigUpdate)), state: SimState = Depends(get_state)
) -> dict[str, Any]:
    body.apply(state.config)
    return state.config.model_dump(mode="json")


@router.get("/stats")
async def stats(state: SimState = Depends(get_state)) -> dict[str, Any]:
    return state.stats.snapshot()


@router.post("/stats/reset")
async def reset_stats(state: SimState = Depends(get_state)) -> dict[str, Any]:
    state.reset_stats()
    return state.stats.snapshot()


@router.post("/clock/advance")
async def advance_clock(
    body: ClockAdvance = Depends(json_body(ClockAdvance)), state: SimState = Depends(get_state)
) -> dict[str, float]:
    """Move the OAuth clock forward: access tokens and install codes expire without waiting."""
    state.clock.advance(body.seconds)
    return {"offsetSeconds": state.clock.offset}


@router.get("/webhooks/deliveries")
async def deliveries(state: SimState = Depends(get_state)) -> list[dict[str, Any]]:
    return [
        {
            "event": d.event,
            "url": d.url,
            "body": d.body.decode(),
            "attempts": d.attempts,
            "statuses": d.statuses,
            "delivered": d.delivered,
            "done": d.done,
        }
        for d in state.webhooks.deliveries
    ]
