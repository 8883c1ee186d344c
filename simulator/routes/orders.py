"""Orders: list, detail, change feed, snapshot, and the status and notes writes."""

from __future__ import annotations

from typing import Literal, Self

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.responses import Response

from simulator.envelope import envelope_response
from simulator.mutations import change_order, get_order
from simulator.routes.deps import (
    changes_response,
    codes_param,
    current_eshop,
    filter_by_time,
    get_state,
    int_param,
    paginate,
    read_body,
)
from simulator.routes.snapshots import start_snapshot
from simulator.state import SimState
from simulator.store import Entity, EshopData
from simulator.views import includes, order_detail, order_list_item

router = APIRouter()

ORDERS_PER_PAGE = 50  # default and maximum
CHANGES_DEFAULT, CHANGES_MAX = 20, 1000


def filter_orders(request: Request, eshop: EshopData) -> list[Entity]:
    """The filters of ``GET /api/orders`` (and its snapshot) that the nodes use. ``orderCodes``
    names the whole set: "No additional filters take effect"."""
    codes = codes_param(request, "orderCodes")
    if codes is not None:
        return [o for o in eshop.orders.values() if o["code"] in codes]
    orders = filter_by_time(request, list(eshop.orders.values()))
    status_id = int_param(request, "statusId")
    if status_id is not None:
        orders = [o for o in orders if o["status"]["id"] == status_id]
    email = request.query_params.get("email")
    if email:
        orders = [o for o in orders if o["email"] == email]
    return orders


@router.get("/api/orders")
async def list_orders(request: Request, eshop: EshopData = Depends(current_eshop)) -> Response:
    page, paginator = paginate(request, filter_orders(request, eshop), ORDERS_PER_PAGE, ORDERS_PER_PAGE)
    return envelope_response({"orders": [order_list_item(o) for o in page], "paginator": paginator})


@router.get("/api/orders/changes")
async def order_changes(request: Request, eshop: EshopData = Depends(current_eshop)) -> Response:
    return changes_response(request, eshop.order_changes, "code", CHANGES_DEFAULT, CHANGES_MAX)


@router.get("/api/orders/snapshot")
async def order_snapshot(
    request: Request, eshop: EshopData = Depends(current_eshop), state: SimState = Depends(get_state)
) -> Response:
    orders = filter_orders(request, eshop)
    wanted = includes(request.query_params.get("include"))
    codes = [o["code"] for o in orders]

    def build() -> list[Entity]:
        return [order_detail(eshop.orders[c], wanted) for c in codes if c in eshop.orders]

    return start_snapshot(state, eshop, "/api/orders/snapshot", build)


@router.get("/api/orders/{code}")
async def order_detail_route(code: str, request: Request, eshop: EshopData = Depends(current_eshop)) -> Response:
    order = get_order(eshop, code)
    return envelope_response({"order": order_detail(order, includes(request.query_params.get("include")))})


class _Change(BaseModel):
    """A PATCH's ``data``: JSON types as the spec gives them (``"1"`` is no integer, ``"yes"`` no
    boolean) and at least one field (``minProperties: 1``), as Shoptet checks them (422)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("at least one field is required")
        return self


class StatusChange(_Change):
    statusId: int | None = None
    paid: bool | None = None
    billingMethodId: int | None = None

    @field_validator("statusId", "billingMethodId", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # the spec's type is integer alone: null is refused when given (leaving it out is fine)
        if value is None:
            raise ValueError("an integer is required, not null")
        return value


class StatusBody(BaseModel):
    data: StatusChange


@router.patch("/api/orders/{code}/status")
async def update_status(
    code: str, request: Request, eshop: EshopData = Depends(current_eshop), state: SimState = Depends(get_state)
) -> Response:
    body = await read_body(request, StatusBody)
    order = get_order(eshop, code)
    change = body.data
    change_order(
        state, eshop, order, status_id=change.statusId, paid=change.paid, billing_method_id=change.billingMethodId
    )
    return envelope_response({"order": order_detail(order, set())})


class AdditionalField(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: Literal[1, 2, 3, 4, 5, 6]
    text: str | None

    @model_validator(mode="after")
    def _first_three_are_short(self) -> AdditionalField:
        """ "additionalField with index 1, 2 & 3 cannot be longer than 255 characters." """
        if self.index <= 3 and self.text is not None and len(self.text) > 255:
            raise ValueError(f"additionalField {self.index} cannot be longer than 255 characters")
        return self


class NotesChange(_Change):
    customerRemark: str | None = None
    eshopRemark: str | None = None
    trackingNumber: str | None = Field(default=None, max_length=32)
    additionalFields: list[AdditionalField] | None = Field(default=None, min_length=1)

    @field_validator("additionalFields", mode="before")
    @classmethod
    def _fields_not_null(cls, value: object) -> object:
        if value is None:  # an array of at least one in the spec, never null
            raise ValueError("an array is required, not null")
        return value


class NotesBody(BaseModel):
    data: NotesChange


@router.patch("/api/orders/{code}/notes")
async def update_notes(
    code: str, request: Request, eshop: EshopData = Depends(current_eshop), state: SimState = Depends(get_state)
) -> Response:
    body = await read_body(request, NotesBody)
    order = get_order(eshop, code)
    fields = body.data.model_dump(include=body.data.model_fields_set)
    change_order(state, eshop, order, fields=fields)
    return envelope_response(None)
