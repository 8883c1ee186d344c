"""``GET /api/stocks`` and ``PATCH /api/stocks/{stockId}/movements``."""

from __future__ import annotations

import copy

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.responses import Response

from simulator.envelope import ShoptetError, envelope_response
from simulator.mutations import move_stock
from simulator.routes.deps import current_eshop, get_state, read_body
from simulator.state import SimState
from simulator.store import EshopData

router = APIRouter()

MAX_MOVEMENTS = 300


class Movement(BaseModel):
    """One row: ``productCode`` plus exactly one of ``amountChange``, ``quantity``, ``realStock``."""

    model_config = ConfigDict(extra="forbid", strict=True)  # "1" and true are no numbers

    productCode: str
    amountChange: float | None = None
    quantity: float | None = None
    realStock: float | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Movement:
        given = [n for n in ("amountChange", "quantity", "realStock") if n in self.model_fields_set]
        if len(given) != 1:
            raise ValueError("exactly one of amountChange, quantity, realStock is required")
        return self


class MovementsBody(BaseModel):
    data: list[Movement] = Field(min_length=1)


@router.get("/api/stocks")
async def list_stocks(eshop: EshopData = Depends(current_eshop)) -> Response:
    return envelope_response({"stocks": copy.deepcopy(eshop.stocks), "defaultStockId": eshop.default_stock_id})


@router.patch("/api/stocks/{stockId}/movements")
async def stock_movements(
    stockId: int, request: Request, eshop: EshopData = Depends(current_eshop), state: SimState = Depends(get_state)
) -> Response:
    body = await read_body(request, MovementsBody)
    if len(body.data) > MAX_MOVEMENTS:
        raise ShoptetError(413, "too-many-items", f"Max. {MAX_MOVEMENTS} movements per request.", "data")
    moves = [m.model_dump(exclude_unset=True) for m in body.data]
    errors = move_stock(state, eshop, stockId, moves)
    if len(errors) == len(moves):
        return envelope_response(None, status=400, errors=errors)
    return envelope_response(None, errors=errors)
