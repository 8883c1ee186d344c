"""shoptet-update-stock-movements: change product amounts in one stock."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nodes.options import StockMovementsOptions
from nodes.shoptet import parse_body, parse_cursor
from worker.envelope import Message, ResultCode
from worker.errors import NodeError, RetryableError, StopError
from worker.node import Connector, NodeContext, Result

#: Shoptet accepts at most 300 products/variants per call.
MAX_ITEMS_PER_CALL = 300
MISSING_PRODUCT = "Missing product in shoptet!"


class Movement(BaseModel):
    """``productCode`` plus exactly one of ``amountChange`` (relative), ``quantity`` or ``realStock``."""

    model_config = ConfigDict(extra="forbid")
    productCode: str = Field(min_length=1)
    amountChange: int | float | None = None
    quantity: int | float | None = None
    realStock: int | float | None = None

    @model_validator(mode="after")
    def _one_amount(self) -> Movement:
        given = [k for k in ("amountChange", "quantity", "realStock") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("needs exactly one of amountChange, quantity, realStock")
        return self


class Resume(BaseModel):
    """Where a retried input goes on: ``sent`` items already applied, and what Shoptet answered."""

    model_config = ConfigDict(extra="ignore")
    sent: int = Field(default=0, ge=0)
    missing: int = Field(default=0, ge=0)
    answers: list[dict[str, Any]] = Field(default_factory=list)


class StockMovementsInput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    stockId: int
    data: list[Movement] = Field(min_length=1)


class ShoptetUpdateStockMovements(Connector):
    """PATCH /api/stocks/{stockId}/movements ``{data}``; output: Shoptet's response body.

    Codes: 0 with the response body (``errors`` lists per-product failures Shoptet skipped);
    1003 "Missing product in shoptet!" when Shoptet answers 400 (every product unknown: a business
    no-op, not a failure), or 0 with that answer under option ``report_unknown_products`` (so a
    topology can publish it); 422 and other 4xx stop; 423/429/5xx repeat.

    Fix: inputs over 300 items are sent as several calls of at most 300. Their answers are merged
    (``errors`` concatenated); a call answered 400 adds its errors, and only when every call was a
    400 is the result 1003. ``amountChange`` is relative, so a call that went through must never be
    sent again: when a later call fails, the retry resumes after the calls already made
    (:class:`Resume`, carried in the retried message's cursor). A later call that stops (422) goes
    to trash with that cursor too, so a replay from trash starts at the call that stopped; an
    operator who edits the body before replaying edits items from ``sent`` on (earlier ones went
    through). A call with ``amountChange`` items that went out and got no answer (a read timeout,
    a dropped connection) may have been applied: sent again, the stock drifted with no error
    anywhere, so it goes to trash with that said instead (absolute ``quantity``/``realStock`` calls
    are retried: sent twice, they set the same amounts).
    """

    name = "shoptet-update-stock-movements"
    Options = StockMovementsOptions
    ordered = True

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        body = parse_body(StockMovementsInput, message.body, self.name)
        client = ctx.require_shoptet()
        items = [m.model_dump(exclude_none=True) for m in body.data]
        resume = parse_cursor(Resume, message, self.name)
        answers, missing = resume.answers, resume.missing
        for start in range(resume.sent, len(items), MAX_ITEMS_PER_CALL):
            chunk = items[start : start + MAX_ITEMS_PER_CALL]
            try:
                answers.append(
                    await client.request("PATCH", f"/api/stocks/{body.stockId}/movements", json={"data": chunk})
                )
            except StopError as exc:
                if exc.status == 400:
                    missing += 1
                    answers.append(exc.body if isinstance(exc.body, dict) else {"data": None, "errors": None})
                    continue
                _resume_after(exc, start, missing, answers)
                raise
            except RetryableError as exc:
                if exc.unanswered and any("amountChange" in item for item in chunk):
                    unknown = StopError(
                        f"{exc.message}: Shoptet may have applied these relative stock changes (items "
                        f"{start + 1}-{start + len(chunk)}); check stock {body.stockId} before replaying "
                        "(a replay sends them again) or discard",
                    )
                    _resume_after(unknown, start, missing, answers)
                    raise unknown from exc
                _resume_after(exc, start, missing, answers)
                raise
        merged = _merge(answers)
        skipped = [f"{e.get('instance') or '?'}: {e.get('errorCode')}" for e in merged.get("errors") or []]
        if skipped:  # Shoptet answers 200 and skips unknown products: nobody would know otherwise
            ctx.log.warning("stock movements skipped by Shoptet", stock_id=body.stockId, skipped=skipped[:50])
        if missing == len(answers) and not ctx.options.get("report_unknown_products"):
            return Result(code=ResultCode.DO_NOT_CONTINUE, body=merged, message=MISSING_PRODUCT)
        return Result(body=merged)


def _resume_after(error: NodeError, sent: int, missing: int, answers: list[dict[str, Any]]) -> None:
    """Past the first call, a retry or a replay from trash must not send the calls made already."""
    if sent > 0:
        error.resume = Resume(sent=sent, missing=missing, answers=answers).model_dump()


def _merge(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """One answer stays as Shoptet sent it; several become one with all their errors."""
    if len(answers) == 1:
        return answers[0]
    errors = [e for a in answers for e in (a.get("errors") or [])]
    data = next((a.get("data") for a in reversed(answers) if a.get("data") is not None), None)
    return {"data": data, "errors": errors or None}
