"""Writers: status, remarks, stock movements; both applications (the harness is parametrised)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx
from nodes_cases import Case, Exchange, play
from nodes_fakes import Harness, envelope, error_body

from nodes.connectors.update_order_status import ShoptetUpdateOrderStatus
from nodes.connectors.update_remark_for_order import ShoptetUpdateRemarkForOrder
from nodes.connectors.update_stock_movements import ShoptetUpdateStockMovements
from worker.envelope import ResultCode
from worker.errors import NodeError, RetryableError, StopError
from worker.node import Connector

STATUS_INPUT = {"id": "2024000123", "status": {"data": {"statusId": -2, "paid": True}}}
NOTES_INPUT = {"id": 2024000124, "notes": {"data": {"trackingNumber": "DR1234", "eshopRemark": "sent"}}}
MOVES = {"stockId": 1, "data": [{"productCode": "26/BIL", "amountChange": -2}, {"productCode": "9", "quantity": 5}]}
STATUS_PATH = "/api/orders/2024000123/status"
UNKNOWN = error_body("unknown-product", 'Product "82" does not exist. Skipped.', "82")

CASES = [
    Case(
        "status",
        ShoptetUpdateOrderStatus,
        STATUS_INPUT,
        [
            Exchange(
                "PATCH", "/api/orders/2024000123/status", response=envelope({"order": {}}), json=STATUS_INPUT["status"]
            )
        ],
        STATUS_INPUT,
    ),
    Case(
        "status-changed-documents-not-generated",
        ShoptetUpdateOrderStatus,
        STATUS_INPUT,
        [
            Exchange(
                "PATCH",
                STATUS_PATH,
                response={
                    "data": {"order": {}},
                    "errors": [
                        {
                            "errorCode": "document-not-generated",
                            "message": 'Delivery note belonging to order "2024000123" was not created.',
                            "instance": "2024000123",
                        }
                    ],
                },
                json=STATUS_INPUT["status"],
            )
        ],
        STATUS_INPUT,
        message='document-not-generated: Delivery note belonging to order "2024000123" was not created.',
    ),
    Case(
        "status-404",
        ShoptetUpdateOrderStatus,
        STATUS_INPUT,
        [Exchange("PATCH", "/api/orders/2024000123/status", 404, error_body("order-not-found", "not found"))],
        raises=StopError,
    ),
    Case(
        "status-422-stops",
        ShoptetUpdateOrderStatus,
        STATUS_INPUT,
        [Exchange("PATCH", "/api/orders/2024000123/status", 422, error_body("invalid-status", "no status -2"))],
        raises=StopError,
    ),
    Case(
        "status-423-repeats",
        ShoptetUpdateOrderStatus,
        STATUS_INPUT,
        [Exchange("PATCH", "/api/orders/2024000123/status", 423, error_body("locked", "same request"))],
        raises=RetryableError,
    ),
    Case("status-empty-data", ShoptetUpdateOrderStatus, {"id": "1", "status": {"data": {}}}, [], raises=StopError),
    Case(
        "status-unknown-field",
        ShoptetUpdateOrderStatus,
        {"id": "1", "status": {"data": {"statusId": 1, "colour": "red"}}},
        [],
        raises=StopError,
    ),
    Case("status-no-id", ShoptetUpdateOrderStatus, {"status": {"data": {"paid": True}}}, [], raises=StopError),
    Case(
        "remark",
        ShoptetUpdateRemarkForOrder,
        NOTES_INPUT,
        [Exchange("PATCH", "/api/orders/2024000124/notes", response=envelope(None), json=NOTES_INPUT["notes"])],
        NOTES_INPUT,
    ),
    Case(
        "remark-422-stops",
        ShoptetUpdateRemarkForOrder,
        NOTES_INPUT,
        [Exchange("PATCH", "/api/orders/2024000124/notes", 422, error_body("invalid", "bad"))],
        raises=StopError,
    ),
    Case(
        "remark-tracking-number-too-long",
        ShoptetUpdateRemarkForOrder,
        {"id": "1", "notes": {"data": {"trackingNumber": "x" * 33}}},
        [],
        raises=StopError,
    ),
    Case(
        "stock-movements",
        ShoptetUpdateStockMovements,
        MOVES,
        [Exchange("PATCH", "/api/stocks/1/movements", response=envelope(None), json={"data": MOVES["data"]})],
        envelope(None),
    ),
    Case(
        "stock-movements-400-is-a-business-no-op",
        ShoptetUpdateStockMovements,
        MOVES,
        [Exchange("PATCH", "/api/stocks/1/movements", 400, UNKNOWN)],
        output=UNKNOWN,
        code=ResultCode.DO_NOT_CONTINUE,
        message="Missing product in shoptet!",
    ),
    Case(
        "stock-movements-422-stops",
        ShoptetUpdateStockMovements,
        MOVES,
        [Exchange("PATCH", "/api/stocks/1/movements", 422, error_body("invalid", "bad"))],
        raises=StopError,
    ),
    Case(
        "stock-movements-two-amounts",
        ShoptetUpdateStockMovements,
        {"stockId": 1, "data": [{"productCode": "1", "amountChange": 1, "quantity": 2}]},
        [],
        raises=StopError,
    ),
    Case("stock-movements-empty", ShoptetUpdateStockMovements, {"stockId": 1, "data": []}, [], raises=StopError),
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
async def test_writer(case: Case, harness: Harness, shoptet_api: respx.MockRouter) -> None:
    await play(case, harness, shoptet_api)


def test_writers_are_ordered() -> None:
    assert ShoptetUpdateOrderStatus.ordered
    assert ShoptetUpdateRemarkForOrder.ordered
    assert ShoptetUpdateStockMovements.ordered


async def test_stock_movements_over_300_items_are_split(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    items = [{"productCode": f"P{n}", "amountChange": 1} for n in range(650)]
    route = shoptet_api.patch("/api/stocks/3/movements").mock(
        side_effect=[
            httpx.Response(200, json=envelope(None, [UNKNOWN["errors"][0]])),
            httpx.Response(400, json=UNKNOWN),
            httpx.Response(200, json=envelope(None)),
        ]
    )

    run = await harness.run(ShoptetUpdateStockMovements(), {"stockId": 3, "data": items})

    sent = [json.loads(call.request.content)["data"] for call in route.calls]
    assert [len(chunk) for chunk in sent] == [300, 300, 50]
    assert [item for chunk in sent for item in chunk] == items
    assert run.result.code == ResultCode.SUCCESS  # one chunk was a 400, the others went through
    assert run.result.body == {"data": None, "errors": [UNKNOWN["errors"][0], UNKNOWN["errors"][0]]}


async def test_stock_movements_all_chunks_400(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    items = [{"productCode": f"P{n}", "realStock": 0} for n in range(301)]
    shoptet_api.patch("/api/stocks/3/movements").mock(return_value=httpx.Response(400, json=UNKNOWN))
    run = await harness.run(ShoptetUpdateStockMovements(), {"stockId": 3, "data": items})
    assert run.result.code == ResultCode.DO_NOT_CONTINUE
    assert run.result.message == "Missing product in shoptet!"

    # stock-update publishes Shoptet's answers: the commonest skip (one unknown product) went nowhere
    reported = await harness.run(
        ShoptetUpdateStockMovements(), {"stockId": 3, "data": items}, options={"report_unknown_products": True}
    )
    assert reported.result.code == ResultCode.SUCCESS
    assert reported.result.body is not None and reported.result.body["errors"]


@pytest.mark.parametrize(
    ("failure", "error_class"),
    [
        # retried: the retry resumes at the failed call
        (httpx.Response(503, json=error_body("unavailable", "try later")), RetryableError),
        # stopped (trash): a replay, once an operator fixed the cause, resumes at the call that stopped
        (httpx.Response(422, json=error_body("invalid-request-data", "bad amount")), StopError),
    ],
)
async def test_stock_movements_go_on_after_the_calls_that_went_through(
    harness: Harness, shoptet_api: respx.MockRouter, failure: httpx.Response, error_class: type[NodeError]
) -> None:
    items = [{"productCode": f"P{n}", "amountChange": 1} for n in range(650)]
    route = shoptet_api.patch("/api/stocks/3/movements").mock(
        side_effect=[
            httpx.Response(200, json=envelope(None, [UNKNOWN["errors"][0]])),
            failure,
            httpx.Response(200, json=envelope(None)),
            httpx.Response(200, json=envelope(None)),
        ]
    )
    node = ShoptetUpdateStockMovements()

    with pytest.raises(error_class) as failed:
        await harness.run(node, {"stockId": 3, "data": items})
    assert failed.value.status == failure.status_code
    assert failed.value.resume is not None and failed.value.resume["sent"] == 300
    run = await harness.run(node, {"stockId": 3, "data": items}, cursor=failed.value.resume)

    sent = [json.loads(call.request.content)["data"] for call in route.calls]
    assert [len(chunk) for chunk in sent] == [300, 300, 300, 50]  # the failed chunk again, never the first
    assert sent[0] == items[:300] and sent[1] == sent[2] == items[300:600] and sent[3] == items[600:]
    assert run.result.code == ResultCode.SUCCESS
    assert run.result.body == {"data": None, "errors": [UNKNOWN["errors"][0]]}  # the first call's answer kept


@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout("read timed out"), httpx.RemoteProtocolError("dropped"), httpx.Response(504, json={})],
)
async def test_relative_stock_movements_without_an_answer_go_to_trash_not_again(
    harness: Harness, shoptet_api: respx.MockRouter, failure: Exception | httpx.Response
) -> None:
    """Sent and unanswered, a call may have been applied: retried, its amountChange counted twice
    and the stock drifted with no error anywhere."""
    items = [{"productCode": f"P{n}", "amountChange": 1} for n in range(301)]
    shoptet_api.patch("/api/stocks/3/movements").mock(side_effect=[httpx.Response(200, json=envelope(None)), failure])

    with pytest.raises(StopError, match=r"may have applied these relative stock changes \(items 301-301\)") as failed:
        await harness.run(ShoptetUpdateStockMovements(), {"stockId": 3, "data": items})
    assert failed.value.resume is not None and failed.value.resume["sent"] == 300  # a replay: the unknown call on


async def test_absolute_stock_movements_without_an_answer_are_retried(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    """Sent twice, an absolute amount sets the same stock: no need for an operator."""
    items = [{"productCode": "P1", "quantity": 5}]
    shoptet_api.patch("/api/stocks/3/movements").mock(side_effect=httpx.ReadTimeout("read timed out"))
    with pytest.raises(RetryableError):
        await harness.run(ShoptetUpdateStockMovements(), {"stockId": 3, "data": items})

    shoptet_api.patch("/api/stocks/3/movements").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(RetryableError):  # never sent: retried, relative or not
        await harness.run(
            ShoptetUpdateStockMovements(), {"stockId": 3, "data": [{"productCode": "P1", "amountChange": 1}]}
        )


async def test_stock_movements_first_call_failing_needs_no_resume(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    shoptet_api.patch("/api/stocks/3/movements").mock(return_value=httpx.Response(503, json={}))
    items = [{"productCode": f"P{n}", "amountChange": 1} for n in range(301)]
    with pytest.raises(RetryableError) as failed:
        await harness.run(ShoptetUpdateStockMovements(), {"stockId": 3, "data": items})
    assert failed.value.resume is None


@pytest.mark.parametrize(
    ("node", "body", "field"),
    [
        (ShoptetUpdateOrderStatus(), {"id": "1", "status": {"data": {"statusId": None}}}, "statusId"),
        (
            ShoptetUpdateOrderStatus(),
            {"id": "1", "status": {"data": {"paid": True, "billingMethodId": None}}},
            "billingMethodId",
        ),
        (ShoptetUpdateRemarkForOrder(), {"id": "1", "notes": {"data": {"additionalFields": None}}}, "additionalFields"),
    ],
)
async def test_a_null_shoptet_types_without_null_is_refused_before_any_call(
    harness: Harness, shoptet_api: respx.MockRouter, node: Connector, body: dict[str, Any], field: str
) -> None:
    """Sent on, Shoptet answered 422 and the message went to trash with Shoptet's error; a replay
    unchanged failed the same way."""
    route = shoptet_api.patch(url__regex=r"/api/orders/1/.*")
    with pytest.raises(StopError, match=f"{field}.*must not be null"):
        await harness.run(node, body)
    assert not route.called
