"""List batches: paging over several pages, cursors, watermarks (with the 60 s offset)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx
from nodes_fakes import Harness, envelope, error_body

from nodes import shoptet
from nodes.batches.order_changes_list import ShoptetGetOrderChangesList
from nodes.batches.orders_list import ShoptetGetOrdersList
from nodes.batches.product_changes_list import ShoptetGetProductChangesList
from nodes.batches.products_list import ShoptetGetProductsList
from nodes.paging import ListBatch, _Listing, _Pages
from worker.envelope import ResultCode
from worker.errors import RetryableError, StopError

NOW_TEXT = "2024-05-20T12:00:00Z"
THIRTY_DAYS_AGO = "2024-04-20T12:00:00Z"


def paged(key: str, pages: list[list[dict[str, Any]]], per_page: int) -> Callable[[httpx.Request], httpx.Response]:
    """A respx side effect serving ``pages`` by the ``page`` query parameter."""

    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        items = pages[page - 1] if page <= len(pages) else []
        paginator = {
            "totalCount": sum(len(p) for p in pages),
            "page": page,
            "pageCount": max(1, len(pages)),
            "itemsOnPage": len(items),
            "itemsPerPage": per_page,
        }
        return httpx.Response(200, json=envelope({key: items, "paginator": paginator}))

    return answer


def changes(*codes: str) -> list[dict[str, Any]]:
    return [{"code": c, "changeTime": "2024-05-20T10:00:00+0200", "changeType": "edit"} for c in codes]


def timed_changes(*changed: tuple[str, int]) -> list[dict[str, Any]]:
    """Changes of ``(code, minute)``: changed at 2024-05-20 08:mm UTC."""
    return [{"code": c, "changeTime": f"2024-05-20T10:{m:02d}:00+0200", "changeType": "edit"} for c, m in changed]


def pages_requested(route: respx.Route) -> list[int]:
    return sorted(int(call.request.url.params["page"]) for call in route.calls)


async def test_order_changes_all_pages_default_from_and_watermark(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    pages = [changes("1", "2"), changes("3"), changes("4", "5")]
    route = shoptet_api.get("/api/orders/changes").mock(side_effect=paged("changes", pages, 1000))

    run = await harness.run(ShoptetGetOrderChangesList(), {})

    assert run.result.code == ResultCode.SUCCESS
    assert sorted(item["code"] for item in run.emitted) == ["1", "2", "3", "4", "5"]
    assert run.emitted[:2] == pages[0]  # page 1 first, then pages as they arrive
    assert pages_requested(route) == [1, 2, 3]
    for call in route.calls:  # T frozen for the whole run: now - 30 days (no watermark yet)
        assert call.request.url.params["from"] == THIRTY_DAYS_AGO
        assert call.request.url.params["itemsPerPage"] == "1000"
    assert harness.store.setting(harness.install, shoptet.LAST_RUN_ORDER_CHANGES) == NOW_TEXT
    assert len(harness.store.setting_writes) == 1
    assert run.deliveries == [(5, 0)]  # the watermark waited for the broker to have all 5 items


async def test_stored_watermark_is_used_with_60_s_offset(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    harness.install.settings[shoptet.LAST_RUN_ORDER_CHANGES] = "2024-05-19T08:30:00+0200"
    route = shoptet_api.get("/api/orders/changes").mock(side_effect=paged("changes", [changes("9")], 1000))

    run = await harness.run(ShoptetGetOrderChangesList(), None)

    assert run.emitted == changes("9")
    assert route.calls.last.request.url.params["from"] == "2024-05-19T06:29:00Z"
    assert harness.store.setting(harness.install, shoptet.LAST_RUN_ORDER_CHANGES) == NOW_TEXT


async def test_input_from_wins_over_watermark(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    harness.install.settings[shoptet.LAST_RUN_PRODUCT_CHANGES] = "2024-05-19T08:30:00Z"
    route = shoptet_api.get("/api/products/changes").mock(
        side_effect=paged("changes", [[{"guid": "g-1", "changeTime": None, "changeType": "add"}]], 1000)
    )

    run = await harness.run(ShoptetGetProductChangesList(), {"from": "2024-05-01T00:00:00+02:00"})

    assert run.emitted == [{"guid": "g-1", "changeTime": None, "changeType": "add"}]
    assert route.calls.last.request.url.params["from"] == "2024-04-30T22:00:00Z"
    assert harness.store.setting(harness.install, shoptet.LAST_RUN_PRODUCT_CHANGES) == NOW_TEXT


async def test_empty_first_page_does_not_continue_and_keeps_watermark(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    harness.install.settings[shoptet.LAST_RUN_ORDER_CHANGES] = "2024-05-19T08:30:00Z"
    shoptet_api.get("/api/orders/changes").mock(side_effect=paged("changes", [], 1000))

    run = await harness.run(ShoptetGetOrderChangesList(), {})

    assert run.result.code == ResultCode.DO_NOT_CONTINUE
    assert run.result.message == "No changes since last import."
    assert run.emitted == []
    assert harness.store.setting_writes == []


async def test_orders_list_first_run_lists_everything_50_per_page(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    pages = [[{"code": str(n)} for n in range(p * 50, p * 50 + 50)] for p in range(4)]
    route = shoptet_api.get("/api/orders").mock(side_effect=paged("orders", pages, 50))

    run = await harness.run(ShoptetGetOrdersList(), {})

    assert len(run.emitted) == 200
    assert {o["code"] for o in run.emitted} == {str(n) for n in range(200)}
    assert pages_requested(route) == [1, 2, 3, 4]
    assert all("creationTimeFrom" not in c.request.url.params for c in route.calls)
    assert all(c.request.url.params["itemsPerPage"] == "50" for c in route.calls)
    assert harness.store.setting(harness.install, shoptet.LAST_RUN_ORDERS) == NOW_TEXT


async def test_products_list_with_watermark(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    harness.install.settings[shoptet.LAST_RUN_PRODUCTS] = "2024-05-18T00:00:30Z"
    route = shoptet_api.get("/api/products").mock(
        side_effect=paged("products", [[{"guid": "a"}], [{"guid": "b"}]], 1000)
    )

    run = await harness.run(ShoptetGetProductsList(), {})

    assert sorted(p["guid"] for p in run.emitted) == ["a", "b"]
    assert {c.request.url.params["creationTimeFrom"] for c in route.calls} == {"2024-05-17T23:59:30Z"}
    assert harness.store.setting(harness.install, shoptet.LAST_RUN_PRODUCTS) == NOW_TEXT


async def test_remaining_pages_are_fetched_in_parallel_at_most_3(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    pages = [changes(str(n)) for n in range(10)]
    serve = paged("changes", pages, 1000)
    running = 0
    peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        return serve(request)

    route = shoptet_api.get("/api/orders/changes").mock(side_effect=slow)

    run = await harness.run(ShoptetGetOrderChangesList(), {})

    assert pages_requested(route) == list(range(1, 11))
    assert len(run.emitted) == 10
    assert peak == 3


async def test_failed_page_writes_no_watermark(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    serve = paged("changes", [changes("1"), changes("2"), changes("3")], 1000)

    def fail_page_3(request: httpx.Request) -> httpx.Response:
        if request.url.params["page"] == "3":
            return httpx.Response(503, json=error_body("unavailable", "try later"))
        return serve(request)

    shoptet_api.get("/api/orders/changes").mock(side_effect=fail_page_3)

    with pytest.raises(RetryableError):
        await harness.run(ShoptetGetOrderChangesList(), {})
    assert harness.store.setting_writes == []


async def test_a_page_failing_part_way_resumes_from_it_not_from_the_first_page(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    """Started over, a 429 on page 17 of 20 sent the items of 16 pages again (each a detail call
    more on the token that had just answered 429)."""
    serve = paged("changes", [changes(str(n)) for n in range(10)], 1000)
    failed: list[str] = []

    def page_6_fails_once(request: httpx.Request) -> httpx.Response:
        if request.url.params["page"] == "6" and not failed:
            failed.append("6")
            return httpx.Response(429, headers={"Retry-After": "1"}, json=error_body("too-many-requests", "slow"))
        return serve(request)

    route = shoptet_api.get("/api/orders/changes").mock(side_effect=page_6_fails_once)
    node, options = ShoptetGetOrderChangesList(), {"page_concurrency": 1}

    with pytest.raises(RetryableError) as raised:
        await harness.run(node, {}, options=options)
    assert [i["code"] for i in harness.emitted] == ["0", "1", "2", "3", "4"]
    resume = raised.value.resume
    page_1_last = "2024-05-20T08:00:00Z"
    assert resume == {
        "page": 6,
        "dateFrom": THIRTY_DAYS_AGO,
        "startedAt": NOW_TEXT,
        "shiftedUpTo": page_1_last,
        "totalCount": 10,
    }

    asked_before = len(route.calls)
    again = await harness.run(node, {}, cursor=resume, options=options)
    assert again.result.code == ResultCode.SUCCESS
    assert sorted(int(c.request.url.params["page"]) for c in route.calls[asked_before:]) == [6, 7, 8, 9, 10]
    assert [i["code"] for i in again.emitted] == ["5", "6", "7", "8", "9"]
    assert harness.store.setting_writes == [
        (harness.install.user, harness.install.application, shoptet.LAST_RUN_ORDER_CHANGES, NOW_TEXT)
    ]


async def test_a_failed_hop_goes_on_from_the_lowest_page_not_emitted() -> None:
    """Pages are fetched a few at a time: pages after the failed one may be through already."""
    pages = _Pages(3, _Listing("code"), None, ahead=5)
    for page in (4, 6, 7):
        await pages.emitted(page)
    assert pages.first_not_emitted() == 5


async def test_422_stops(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    shoptet_api.get("/api/orders/changes").mock(
        return_value=httpx.Response(422, json=error_body("invalid-parameter", "bad from", "from"))
    )
    with pytest.raises(StopError):
        await harness.run(ShoptetGetOrderChangesList(), {"from": "2024-05-01T00:00:00Z"})
    assert harness.store.setting_writes == []


async def test_a_first_run_in_hops_lists_everything_even_if_a_watermark_appears_meanwhile(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    """T is frozen by the first hop, "none" included: a later hop that read the watermark another
    run stored meanwhile filtered the rest of the pages, and their items were never listed."""
    pages = [[{"code": str(n)} for n in range(p * 50, p * 50 + 50)] for p in range(2)]
    route = shoptet_api.get("/api/orders").mock(side_effect=paged("orders", pages, 50))
    node = ShoptetGetOrdersList()

    first = await harness.run(node, {}, options={"max_pages_per_hop": 1})
    assert first.result.code == ResultCode.BATCH_CURSOR_WITH_ITEMS and first.result.cursor is not None
    harness.install.settings[shoptet.LAST_RUN_ORDERS] = "2024-05-20T11:00:00Z"  # another run's
    second = await harness.run(node, {}, cursor=first.result.cursor, options={"max_pages_per_hop": 1})

    assert second.result.code == ResultCode.SUCCESS
    assert pages_requested(route) == [1, 2]
    assert all("creationTimeFrom" not in c.request.url.params for c in route.calls)
    assert len(first.emitted + second.emitted) == 100


async def test_max_pages_per_hop_returns_cursor_then_resumes(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    harness.install.settings[shoptet.LAST_RUN_ORDER_CHANGES] = "2024-05-19T00:00:00Z"
    pages = [changes(str(n)) for n in range(5)]
    route = shoptet_api.get("/api/orders/changes").mock(side_effect=paged("changes", pages, 1000))
    node = ShoptetGetOrderChangesList()

    first = await harness.run(node, {}, options={"max_pages_per_hop": 2})

    assert first.result.code == ResultCode.BATCH_CURSOR_WITH_ITEMS
    cursor = first.result.cursor
    # with page 1's last change: as far as a run that sees the feed shift later moves the watermark
    assert cursor == {
        "page": 3,
        "dateFrom": "2024-05-18T23:59:00Z",
        "startedAt": NOW_TEXT,
        "shiftedUpTo": "2024-05-20T08:00:00Z",
        "totalCount": 5,  # a later hop counting fewer saw the feed lose items
    }
    assert sorted(i["code"] for i in first.emitted) == ["0", "1"]
    assert harness.store.setting_writes == []

    # the next hop: a later clock and a newer watermark must not change the frozen T
    harness.install.settings[shoptet.LAST_RUN_ORDER_CHANGES] = "2024-05-20T11:00:00Z"
    second = await harness.run(node, {}, cursor=cursor, options={"max_pages_per_hop": 2})
    assert second.result.code == ResultCode.BATCH_CURSOR_WITH_ITEMS
    assert second.result.cursor is not None and second.result.cursor["page"] == 5
    third = await harness.run(node, {}, cursor=second.result.cursor, options={"max_pages_per_hop": 2})

    assert third.result.code == ResultCode.SUCCESS
    assert sorted(i["code"] for i in second.emitted + third.emitted) == ["2", "3", "4"]
    assert pages_requested(route) == [1, 2, 3, 4, 5]
    assert {c.request.url.params["from"] for c in route.calls} == {"2024-05-18T23:59:00Z"}
    # the watermark is the time the run started, written once, after the last page
    assert harness.store.setting_writes == [
        (harness.install.user, harness.install.application, shoptet.LAST_RUN_ORDER_CHANGES, NOW_TEXT)
    ]


def shifting(
    key: str, before: list[list[dict[str, Any]]], after: list[list[dict[str, Any]]], per_page: int
) -> Callable[[httpx.Request], httpx.Response]:
    """Pages of ``before`` for the first request, of ``after`` from then on: the list changed
    between the first page and the others."""
    served = [0]

    def answer(request: httpx.Request) -> httpx.Response:
        served[0] += 1
        return paged(key, before if served[0] == 1 else after, per_page)(request)

    return answer


async def test_an_item_moved_while_paging_moves_the_watermark_only_to_page_1s_last_change(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    """Order 2 was edited after page 1 was read: its change moved to the end of the feed, order 4
    moved up into page 1's last slot, and no page of this run holds it. Only order 2 showing up
    twice tells. The next run must list order 4: the watermark goes no further than order 3's
    change, the last on page 1 (left where it was, on a busy shop it never moved again)."""
    harness.install.settings[shoptet.LAST_RUN_ORDER_CHANGES] = "2024-05-19T00:00:00Z"
    before = [timed_changes(("1", 1), ("2", 2), ("3", 3)), timed_changes(("4", 4), ("5", 5), ("6", 6))]
    after = [timed_changes(("1", 1), ("3", 3), ("4", 4)), timed_changes(("5", 5), ("6", 6), ("2", 7))]
    shoptet_api.get("/api/orders/changes").mock(side_effect=shifting("changes", before, after, 3))

    run = await harness.run(ShoptetGetOrderChangesList(), {})

    assert run.result.code == ResultCode.SUCCESS
    assert "4" not in {i["code"] for i in run.emitted}  # what the shift hid
    assert harness.store.setting(harness.install, shoptet.LAST_RUN_ORDER_CHANGES) == "2024-05-20T08:03:00Z"
    assert "shifted" in run.result.message
    next_from = shoptet.watermark_start(harness.install, shoptet.LAST_RUN_ORDER_CHANGES)
    assert next_from is not None and next_from <= "2024-05-20T08:04:00Z"  # order 4's change


async def test_a_shifted_run_never_moves_the_watermark_back(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    harness.install.settings[shoptet.LAST_RUN_ORDER_CHANGES] = "2024-05-20T08:30:00Z"
    before = [timed_changes(("1", 1), ("2", 2), ("3", 3)), timed_changes(("4", 4), ("5", 5), ("6", 6))]
    after = [timed_changes(("1", 1), ("3", 3), ("4", 4)), timed_changes(("5", 5), ("6", 6), ("2", 7))]
    shoptet_api.get("/api/orders/changes").mock(side_effect=shifting("changes", before, after, 3))

    run = await harness.run(ShoptetGetOrderChangesList(), {"from": "2024-05-20T08:00:00Z"})

    assert "shifted" in run.result.message
    assert harness.store.setting_writes == []


def out_of_order(key: str, items: list[dict[str, Any]]) -> Callable[[httpx.Request], Any]:
    """One item a page; page 2 is answered after page 3, which counts one item more (the list
    grew in between)."""

    async def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        if page == 2:
            await asyncio.sleep(0.05)
        total = len(items) - 1 if page <= 2 else len(items)
        paginator = {"totalCount": total, "page": page, "pageCount": total, "itemsOnPage": 1, "itemsPerPage": 1}
        return httpx.Response(200, json=envelope({key: [items[page - 1]], "paginator": paginator}))

    return answer


async def test_pages_answered_out_of_order_are_no_shift(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    """Page 3, asked for after page 2, is answered first and counts one order more (the list grew):
    page 2 counting fewer than page 3 read as a shift, and on a busy shop nearly every run did."""
    orders = [{"code": str(n)} for n in range(1, 8)]
    shoptet_api.get("/api/orders").mock(side_effect=out_of_order("orders", orders))

    run = await harness.run(ShoptetGetOrdersList(), {}, options={"page_concurrency": 2})

    assert sorted(i["code"] for i in run.emitted) == ["1", "2", "3", "4", "5", "6", "7"]
    assert "shifted" not in run.result.message
    assert harness.store.setting(harness.install, shoptet.LAST_RUN_ORDERS) == NOW_TEXT


async def test_a_change_feed_whose_count_fell_is_shifted(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    """A change feed's oldest entries expire while new ones come: a count below one seen before
    may hide a change that moved into a page already read, whichever page was asked for first.
    The watermark then moves no further than page 1's last change."""
    changes_fed = [c for n in range(1, 8) for c in timed_changes((str(n), n))]
    shoptet_api.get("/api/orders/changes").mock(side_effect=out_of_order("changes", changes_fed))

    run = await harness.run(ShoptetGetOrderChangesList(), {}, options={"page_concurrency": 2})

    assert "shifted" in run.result.message
    assert harness.store.setting(harness.install, shoptet.LAST_RUN_ORDER_CHANGES) == "2024-05-20T08:01:00Z"


async def test_a_change_that_is_no_date_leaves_a_shifted_feeds_watermark_alone(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    harness.install.settings[shoptet.LAST_RUN_ORDER_CHANGES] = "2024-05-19T00:00:00Z"
    changes_fed = [c for n in range(1, 8) for c in timed_changes((str(n), n))]
    changes_fed[0]["changeTime"] = "yesterday"
    shoptet_api.get("/api/orders/changes").mock(side_effect=out_of_order("changes", changes_fed))

    run = await harness.run(ShoptetGetOrderChangesList(), {}, options={"page_concurrency": 2})

    assert len(run.emitted) == 7 and "shifted" in run.result.message
    assert harness.store.setting_writes == []


async def test_a_list_that_grew_while_paging_is_read_to_its_new_end(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    """Order 2 was edited again after page 1 was read, and orders 7-9 changed too: order 2's change
    moved past the pages page 1 announced, order 4 slipped into page 1. Only the page the list grew
    by shows order 2 a second time; without it nothing tells, and order 4 is never listed again."""
    harness.install.settings[shoptet.LAST_RUN_ORDER_CHANGES] = "2024-05-19T00:00:00Z"
    before = [changes("1", "2", "3"), changes("4", "5", "6")]
    after = [changes("1", "3", "4"), changes("5", "6", "7"), changes("8", "9", "2")]
    route = shoptet_api.get("/api/orders/changes").mock(side_effect=shifting("changes", before, after, 3))

    run = await harness.run(ShoptetGetOrderChangesList(), {}, options={"page_concurrency": 1})

    assert pages_requested(route) == [1, 2, 3]
    assert [i["code"] for i in run.emitted] == ["1", "2", "3", "5", "6", "7", "8", "9", "2"]
    assert "shifted" in run.result.message
    # no further than page 1's last change, which order 4's is not before
    assert harness.store.setting(harness.install, shoptet.LAST_RUN_ORDER_CHANGES) == "2024-05-20T08:00:00Z"


async def test_a_grown_list_goes_on_in_the_next_hop_past_the_pages_first_announced(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    before = [changes("1", "2"), changes("3", "4")]
    after = [changes("1", "2"), changes("3", "4"), changes("5", "6")]
    route = shoptet_api.get("/api/orders/changes").mock(side_effect=shifting("changes", before, after, 2))
    node = ShoptetGetOrderChangesList()

    first = await harness.run(node, {}, options={"max_pages_per_hop": 2})
    assert first.result.code == ResultCode.BATCH_CURSOR_WITH_ITEMS
    assert first.result.cursor is not None and first.result.cursor["page"] == 3
    last = await harness.run(node, {}, cursor=first.result.cursor, options={"max_pages_per_hop": 2})

    assert pages_requested(route) == [1, 2, 3]
    assert [i["code"] for i in first.emitted + last.emitted] == ["1", "2", "3", "4", "5", "6"]
    assert last.result.code == ResultCode.SUCCESS
    assert harness.store.setting(harness.install, shoptet.LAST_RUN_ORDER_CHANGES) == NOW_TEXT


async def test_a_total_that_fell_while_paging_leaves_the_watermark_alone(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    before = [[{"code": str(n)} for n in range(3)], [{"code": str(n)} for n in range(3, 6)]]
    after = [[{"code": str(n)} for n in range(1, 4)], [{"code": str(n)} for n in range(4, 6)]]  # order 0 deleted
    shoptet_api.get("/api/orders").mock(side_effect=shifting("orders", before, after, 3))

    run = await harness.run(ShoptetGetOrdersList(), {})

    assert sorted(o["code"] for o in run.emitted) == ["0", "1", "2", "4", "5"]  # 3 slipped into page 1
    assert harness.store.setting_writes == []


async def test_a_shift_seen_in_an_earlier_hop_holds_the_watermark_to_page_1s_last_change(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    before = [timed_changes(("1", 1), ("2", 2)), timed_changes(("3", 3), ("4", 4)), timed_changes(("5", 5), ("6", 6))]
    after = [timed_changes(("1", 1), ("3", 3)), timed_changes(("4", 4), ("2", 7)), timed_changes(("5", 5), ("6", 6))]
    shoptet_api.get("/api/orders/changes").mock(side_effect=shifting("changes", before, after, 2))
    node = ShoptetGetOrderChangesList()

    first = await harness.run(node, {}, options={"max_pages_per_hop": 2})
    assert first.result.cursor is not None and first.result.cursor["shifted"] is True
    last = await harness.run(node, {}, cursor=first.result.cursor, options={"max_pages_per_hop": 2})

    assert last.result.code == ResultCode.SUCCESS
    assert harness.store.setting_writes == [
        (harness.install.user, harness.install.application, shoptet.LAST_RUN_ORDER_CHANGES, "2024-05-20T08:02:00Z")
    ]


async def test_an_order_deleted_while_a_retry_waited_leaves_the_watermark_alone(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    """Order 10 was deleted while page 3's 503 waited: order 100 moved up into page 2, read before.
    Only the count, lower than the first attempt's, tells; the retry knows it from its cursor."""
    harness.install.settings[shoptet.LAST_RUN_ORDERS] = "2024-05-19T00:00:00Z"
    orders = [{"code": str(n)} for n in range(150)]
    failed: list[bool] = []

    def page_3_fails_once(request: httpx.Request) -> httpx.Response:
        if request.url.params["page"] == "3" and not failed:
            failed.append(True)
            return httpx.Response(503, json=error_body("unavailable", "try later"))
        live = [o for o in orders if o["code"] != "10"] if failed else orders
        return paged("orders", [live[p : p + 50] for p in range(0, len(live), 50)], 50)(request)

    shoptet_api.get("/api/orders").mock(side_effect=page_3_fails_once)
    node, options = ShoptetGetOrdersList(), {"page_concurrency": 1}

    with pytest.raises(RetryableError) as raised:
        await harness.run(node, {}, options=options)
    again = await harness.run(node, {}, cursor=raised.value.resume, options=options)

    assert "100" not in {o["code"] for o in harness.emitted + again.emitted}  # what the shift hid
    assert "shifted" in again.result.message
    assert harness.store.setting_writes == []


async def test_a_slow_page_that_fails_is_retried_with_few_pages_sent_again(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    """Page 2 waits out a timeout while the other workers go on: unbounded, they emitted the rest
    of the run meanwhile, and the retry, going on from page 2, emitted 18 of 20 pages again."""
    serve = paged("orders", [[{"code": str(n)} for n in range(p * 50, p * 50 + 50)] for p in range(20)], 50)
    failed: list[bool] = []

    async def page_2_times_out_once(request: httpx.Request) -> httpx.Response:
        if request.url.params["page"] == "2" and not failed:
            await asyncio.sleep(0.2)  # stands for the 30 s read timeout
            failed.append(True)
            return httpx.Response(504, json=error_body("timeout", "gateway"))
        return serve(request)

    shoptet_api.get("/api/orders").mock(side_effect=page_2_times_out_once)
    node = ShoptetGetOrdersList()

    with pytest.raises(RetryableError) as raised:
        await harness.run(node, {})
    first = [o["code"] for o in harness.emitted]
    assert raised.value.resume is not None and raised.value.resume["page"] == 2
    again = await harness.run(node, {}, cursor=raised.value.resume)
    second = [o["code"] for o in again.emitted]

    assert set(first) | set(second) == {str(n) for n in range(1000)}
    # at most page_concurrency - 1 (2) pages were fetched past page 2 before it failed
    assert len(set(first) & set(second)) <= 100


@pytest.mark.parametrize(
    ("node", "key"),
    [
        (ShoptetGetOrderChangesList(), shoptet.LAST_RUN_ORDER_CHANGES),
        (ShoptetGetOrdersList(), shoptet.LAST_RUN_ORDERS),
    ],
)
async def test_an_input_from_later_than_the_watermark_leaves_it(
    harness: Harness, shoptet_api: respx.MockRouter, node: ListBatch, key: str
) -> None:
    """Moved to the run's start, the watermark passed the changes between it and ``from``: no run
    listed them, and no later one would."""
    harness.install.settings[key] = "2024-05-20T06:00:00Z"
    shoptet_api.get(node.path).mock(side_effect=paged(node.items_key, [changes("9")], node.items_per_page))

    run = await harness.run(node, {"from": "2024-05-20T11:00:00Z"})

    assert harness.store.setting_writes == []
    assert run.result.code == ResultCode.SUCCESS and "`from` is later" in (run.result.message or "")


async def test_a_first_run_with_a_from_sets_the_watermark(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    """order-import's documented start ({"from": ...}) on a new install: left unset, the watermark
    made the next plain run list every order the shop ever had."""
    node = ShoptetGetOrdersList()
    shoptet_api.get(node.path).mock(side_effect=paged(node.items_key, [changes("9")], node.items_per_page))

    await harness.run(node, {"from": "2024-01-01T00:00:00Z"})

    assert harness.store.setting(harness.install, shoptet.LAST_RUN_ORDERS) == NOW_TEXT


async def test_orchesty_cursor_without_started_at(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    route = shoptet_api.get("/api/orders/changes").mock(
        side_effect=paged("changes", [changes("1"), changes("2")], 1000)
    )
    run = await harness.run(ShoptetGetOrderChangesList(), {}, cursor={"page": 2, "dateFrom": "2024-05-01T00:00:00Z"})
    assert run.emitted == changes("2")
    assert pages_requested(route) == [2]
    assert route.calls.last.request.url.params["from"] == "2024-05-01T00:00:00Z"
    assert harness.store.setting(harness.install, shoptet.LAST_RUN_ORDER_CHANGES) == NOW_TEXT


async def test_bad_cursor_or_from_stops(harness: Harness) -> None:
    with pytest.raises(StopError):
        await harness.run(ShoptetGetOrderChangesList(), {"from": "yesterday"})
    with pytest.raises(StopError):
        await harness.run(ShoptetGetOrderChangesList(), {}, cursor={"page": 0})
