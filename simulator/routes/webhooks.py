"""Webhook registration: list, register, delete, renew the signature key."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import Response

from simulator.envelope import envelope_response
from simulator.routes.deps import current_eshop, get_state, paginate, read_body
from simulator.state import SimState
from simulator.store import EshopData
from worker.webhook_events import SHOPTET_WEBHOOK_EVENTS, SYSTEM_WEBHOOK_EVENTS

router = APIRouter()

WEBHOOKS_DEFAULT, WEBHOOKS_MAX = 20, 500


class NewWebhook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: str = Field(pattern=r"^[a-zA-Z]+:[a-zA-Z]+$")
    url: str = Field(max_length=2000)
    sendPayload: str | None = Field(default=None, pattern="^full$")

    @field_validator("event")
    @classmethod
    def _registrable(cls, event: str) -> str:
        # the events table of Shoptet's API description (the worker's copy is tested against it);
        # accepting any name here hid a subscribe node that asked for events Shoptet refuses
        if event in SYSTEM_WEBHOOK_EVENTS:
            raise ValueError(f"{event} is a system webhook, set up in the Partners' addon administration")
        if event not in SHOPTET_WEBHOOK_EVENTS:
            raise ValueError(f"unknown event {event}")
        return event


class RegisterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: list[NewWebhook] = Field(min_length=1, max_length=50)


@router.get("/api/webhooks")
async def list_webhooks(
    request: Request, eshop: EshopData = Depends(current_eshop), state: SimState = Depends(get_state)
) -> Response:
    page, paginator = paginate(request, state.webhooks.registered(eshop.eshop_id), WEBHOOKS_DEFAULT, WEBHOOKS_MAX)
    return envelope_response({"webhooks": [w.to_api() for w in page], "paginator": paginator})


@router.post("/api/webhooks")
async def register_webhooks(
    request: Request, eshop: EshopData = Depends(current_eshop), state: SimState = Depends(get_state)
) -> Response:
    body = await read_body(request, RegisterBody)
    created = state.webhooks.register(eshop.eshop_id, [(w.event, w.url, w.sendPayload) for w in body.data])
    return envelope_response({"webhooks": [w.to_api() for w in created]}, status=201)


@router.post("/api/webhooks/renew-signature-key")
async def renew_signature_key(
    eshop: EshopData = Depends(current_eshop), state: SimState = Depends(get_state)
) -> Response:
    return envelope_response({"signatureKey": state.renew_signature_key(eshop)})


@router.delete("/api/webhooks/{id}")
async def delete_webhook(
    id: int, eshop: EshopData = Depends(current_eshop), state: SimState = Depends(get_state)
) -> Response:
    state.webhooks.delete(eshop.eshop_id, id)
    return envelope_response(None)
