"""Snapshots: start the job, the job:finished webhook, streaming the gzipped JSON Lines result."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
from nodes_fakes import API, Harness, envelope, error_body

from nodes import shoptet
from nodes.connectors import parse_json_lines
from nodes.connectors.get_all_orders import ShoptetGetAllOrders
from nodes.connectors.get_all_products import ShoptetGetAllProducts
from nodes.connectors.job_finished_webhook import ShoptetJobFinishedWebhook
from nodes.connectors.parse_json_lines import ShoptetParseJsonLines, gunzip, text_lines
from worker.envelope import ResultCode
from worker.errors import RetryableError, StopError, StoreUnavailable
from worker.node import NodeContext
from worker.store import Install

RESULT_URL = "https://files.test.shoptet/api-results/3ax1844-lrmsrf0.json.gz"


# -- get-all-orders / get-all-products ---------------------------------------------------------


async def test_get_all_orders_from_watermark(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    harness.install.settings[shoptet.LAST_RUN_ORDER_CHANGES] = "2024-05-19T10:00:00Z"
    route = shoptet_api.get("/api/orders/snapshot").mock(
        return_value=httpx.Response(202, json=envelope({"jobId": "ad24xod"}))
    )

    run = await harness.run(ShoptetGetAllOrders(), {})

    assert run.result.code == ResultCode.SUCCESS
    assert run.result.body == {"jobId": "ad24xod"}
    assert dict(route.calls.last.request.url.params) == {
        "include": "shippingDetails,notes,surchargeParameters",
        "creationTimeFrom": "2024-05-19T09:59:00Z",
    }
    # not moved on the request: a job that fails or never finishes would skip its window for good
    assert harness.store.setting_writes == []


async def test_get_all_orders_input_from_and_first_run(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    route = shoptet_api.get("/api/orders/snapshot").mock(
        return_value=httpx.Response(202, json=envelope({"jobId": "j1"}))
    )
    await harness.run(ShoptetGetAllOrders(), {"from": "2024-01-01T00:00:00+0100"})
    assert route.calls.last.request.url.params["creationTimeFrom"] == "2023-12-31T23:00:00Z"
    harness.install.settings.clear()
    await harness.run(ShoptetGetAllOrders(), None)
    assert "creationTimeFrom" not in route.calls.last.request.url.params


async def test_a_snapshot_whose_job_could_not_be_recorded_asks_for_no_second_job(
    harness: Harness, shoptet_api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store was down as the full export's job was recorded: the retry asked Shoptet again, and
    both exports went to the sink whole."""
    route = shoptet_api.get("/api/orders/snapshot").mock(
        side_effect=[
            httpx.Response(202, json=envelope({"jobId": "j1"})),
            httpx.Response(202, json=envelope({"jobId": "j2"})),
        ]
    )
    record = harness.store.set_setting

    async def store_down(*args: Any) -> None:
        raise StoreUnavailable("database restarting")

    monkeypatch.setattr(harness.store, "set_setting", store_down)
    with pytest.raises(StoreUnavailable) as down:
        await harness.run(ShoptetGetAllOrders(), {})
    assert down.value.resume == {"jobId": "j1"}
    monkeypatch.setattr(harness.store, "set_setting", record)

    again = await harness.run(ShoptetGetAllOrders(), {}, cursor=down.value.resume)

    assert route.call_count == 1
    assert again.result.body == {"jobId": "j1"}
    assert [w[2:] for w in harness.store.setting_writes] == [(shoptet.FULL_SNAPSHOT_JOB["/api/orders/snapshot"], "j1")]


async def test_get_all_products_and_failure_keeps_watermark(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    route = shoptet_api.get("/api/products/snapshot").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "3"}),
            httpx.Response(202, json=envelope({"jobId": "p1"})),
        ]
    )
    with pytest.raises(RetryableError):
        await harness.run(ShoptetGetAllProducts(), {})
    assert harness.store.setting_writes == []

    run = await harness.run(ShoptetGetAllProducts(), {})
    assert run.result.body == {"jobId": "p1"}
    assert dict(route.calls.last.request.url.params) == {}
    # a full export (no watermark yet): its job is recorded, and only its completion moves the watermark
    full = shoptet.FULL_SNAPSHOT_JOB["/api/products/snapshot"]
    assert [w[2:] for w in harness.store.setting_writes] == [(full, "p1")]


# -- job-finished webhook ----------------------------------------------------------------------------


def job(endpoint: str = "/api/orders/snapshot", status: str = "completed") -> dict[str, Any]:
    return {
        "jobId": "3ax1844",
        "endpoint": endpoint,
        "creationTime": "2024-05-20T11:00:00+0200",
        "completionTime": "2024-05-20T11:05:00+0200",
        "duration": "300.1",
        "status": status,
        "resultUrl": RESULT_URL,
        "log": None,
        "validUntil": "2024-05-21T11:05:00+0200",
    }


def webhook(event: str = "job:finished", eshop_id: int = 222651) -> dict[str, Any]:
    return {"eshopId": eshop_id, "event": event, "eventCreated": "2024-05-20T11:05:01+0200", "eventInstance": "3ax1844"}


def stored_setting(harness: Harness, key: str, value: str) -> None:
    """A setting of the stored install, which the nodes read rather than the message's install."""
    harness.store.installs[(harness.install.user, harness.install.application)].settings[key] = value


def no_install_context(harness: Harness, **options: Any) -> NodeContext:
    return harness.context(install=False, client_factory=harness.client, options=options)


@pytest.mark.parametrize(
    ("endpoint", "key"),
    [
        ("/api/orders/snapshot", shoptet.LAST_RUN_ORDER_CHANGES),
        ("/api/products/snapshot", shoptet.LAST_RUN_PRODUCT_CHANGES),
    ],
)
async def test_job_finished_finds_install_by_eshop_and_application(
    harness: Harness, shoptet_api: respx.MockRouter, endpoint: str, key: str
) -> None:
    stored_setting(harness, shoptet.FULL_SNAPSHOT_JOB[endpoint], "3ax1844")  # a full export's job
    # another application's install of the same e-shop must not be picked
    other = "shoptet" if harness.install.application == "shoptet-premium" else "shoptet-premium"
    await harness.store.add_install(Install(user="other", application=other, eshop_id="222651"))
    shoptet_api.get("/api/system/jobs/3ax1844").mock(
        return_value=httpx.Response(200, json=envelope({"job": job(endpoint)}))
    )
    ctx = no_install_context(harness)

    run = await harness.run(
        ShoptetJobFinishedWebhook(),
        webhook(),
        ctx=ctx,
        headers={"user": "", "application": harness.install.application},
    )

    assert run.result.code == ResultCode.SUCCESS
    assert run.result.body == job(endpoint)
    assert ctx.install is not None and ctx.install.user == harness.install.user  # the runtime stamps `user`
    assert ctx.shoptet is not None and ctx.shoptet.install.user == harness.install.user
    # not here: only once shoptet-parse-json-lines has read the whole file
    assert harness.store.setting(harness.install, key) is None


@pytest.mark.parametrize(
    ("recorded", "stored", "moved"),
    [
        (None, None, False),  # a filtered export: older orders changed meanwhile are only in the feed
        ("other-job", None, False),  # another full export than this one
        ("3ax1844", "2024-05-20T10:00:00Z", False),  # the feed is past the job already: never back
        ("3ax1844", "2024-05-20T08:00:00Z", True),
    ],
)
async def test_only_a_full_exports_whole_file_moves_the_watermark_and_only_forward(
    harness: Harness, shoptet_api: respx.MockRouter, recorded: str | None, stored: str | None, moved: bool
) -> None:
    # in the store, not on the message's install: the request and the change poll wrote them since
    if recorded is not None:
        stored_setting(harness, shoptet.FULL_SNAPSHOT_JOB["/api/orders/snapshot"], recorded)
    if stored is not None:
        stored_setting(harness, shoptet.LAST_RUN_ORDER_CHANGES, stored)
    shoptet_api.get(RESULT_URL).mock(return_value=httpx.Response(200, content=gzip.compress(jsonl(3))))
    run = await harness.run(ShoptetParseJsonLines(), job())
    assert run.result.code == ResultCode.SUCCESS
    writes = [w[2:] for w in harness.store.setting_writes]
    assert writes == ([(shoptet.LAST_RUN_ORDER_CHANGES, "2024-05-20T09:00:00Z")] if moved else [])
    # only once the broker has every item: (items emitted, watermark writes) when it was asked
    assert run.deliveries == [(1, 0)]


@pytest.mark.parametrize(
    ("changes", "moved"),
    [
        ({"endpoint": "/api/orders/snapshot?include=notes"}, True),  # a query on the path: same export
        ({"creationTime": None}, False),  # not the completion time: it skips changes made meanwhile
        ({"creationTime": "tomorrow-ish"}, False),  # not understood: the export stands, the feed stays
    ],
)
async def test_the_export_moves_the_watermark_by_its_bare_endpoint_and_creation_time_only(
    harness: Harness, shoptet_api: respx.MockRouter, changes: dict[str, Any], moved: bool
) -> None:
    stored_setting(harness, shoptet.FULL_SNAPSHOT_JOB["/api/orders/snapshot"], "3ax1844")
    shoptet_api.get(RESULT_URL).mock(return_value=httpx.Response(200, content=gzip.compress(jsonl(3))))
    run = await harness.run(ShoptetParseJsonLines(), {**job(), **changes})
    assert run.result.code == ResultCode.SUCCESS and [len(b) for b in run.emitted] == [3]
    writes = [w[2:] for w in harness.store.setting_writes]
    assert writes == ([(shoptet.LAST_RUN_ORDER_CHANGES, "2024-05-20T09:00:00Z")] if moved else [])


async def test_a_full_export_that_did_not_complete_or_did_not_parse_leaves_the_watermark(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    """Its window is in no export, so the change feed must still list it."""
    stored_setting(harness, shoptet.FULL_SNAPSHOT_JOB["/api/orders/snapshot"], "3ax1844")
    assert (await harness.run(ShoptetParseJsonLines(), job(status="failed"))).result.code == ResultCode.STOP_AND_FAIL
    shoptet_api.get(RESULT_URL).mock(return_value=httpx.Response(200, content=gzip.compress(b'{"ok": 1}\n{broken\n')))
    with pytest.raises(StopError, match="line 2 is not JSON"):
        await harness.run(ShoptetParseJsonLines(), job())
    assert harness.store.setting_writes == []


async def test_job_finished_takes_the_install_its_user_header_names_when_the_eshop_has_two(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    """The ingress starts the process for the install whose key signed the webhook; the node took
    the e-shop's first install, called Shoptet with its token and labelled the output with it."""
    second = Install(user="second-user", application=harness.install.application, eshop_id=harness.install.eshop_id)
    await harness.store.add_install(second.model_copy(update={"secrets": harness.install.secrets}))
    shoptet_api.get("/api/system/jobs/3ax1844").mock(return_value=httpx.Response(200, json=envelope({"job": job()})))
    eshop_id = int(harness.install.eshop_id or 0)

    for user in (harness.install.user, "second-user"):
        ctx = no_install_context(harness)
        headers = {"user": user, "application": harness.install.application}
        run = await harness.run(ShoptetJobFinishedWebhook(), webhook(eshop_id=eshop_id), ctx=ctx, headers=headers)
        assert run.result.code == ResultCode.SUCCESS
        assert ctx.install is not None and ctx.install.user == user


async def test_job_finished_application_from_option(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    shoptet_api.get("/api/system/jobs/3ax1844").mock(return_value=httpx.Response(200, json=envelope({"job": job()})))
    ctx = no_install_context(harness, application=harness.install.application)
    run = await harness.run(ShoptetJobFinishedWebhook(), webhook(), ctx=ctx, headers={"application": "unrelated"})
    assert run.result.code == ResultCode.SUCCESS


async def test_job_finished_endpoints_option_filters_other_jobs(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    answer = httpx.Response(200, json=envelope({"job": job("/api/products/snapshot")}))
    shoptet_api.get("/api/system/jobs/3ax1844").mock(return_value=answer)
    ctx = no_install_context(harness, endpoints=["/api/orders/snapshot"])
    run = await harness.run(ShoptetJobFinishedWebhook(), webhook(), ctx=ctx)
    assert run.result.code == ResultCode.DO_NOT_CONTINUE
    assert harness.store.setting_writes == []  # the process that follows the job reads its file


async def test_job_finished_other_event_fails(harness: Harness) -> None:
    run = await harness.run(ShoptetJobFinishedWebhook(), webhook("order:create"), ctx=no_install_context(harness))
    assert run.result.code == ResultCode.STOP_AND_FAIL
    assert run.result.message == "Event [event=order:create] is not supported"


async def test_job_finished_unknown_or_disabled_eshop_does_not_continue(harness: Harness) -> None:
    run = await harness.run(ShoptetJobFinishedWebhook(), webhook(eshop_id=1), ctx=no_install_context(harness))
    assert run.result.code == ResultCode.DO_NOT_CONTINUE
    assert "eshopId [1] is not installed" in run.result.message

    await harness.store.add_install(harness.install.model_copy(update={"enabled": False}))
    run = await harness.run(ShoptetJobFinishedWebhook(), webhook(), ctx=no_install_context(harness))
    assert run.result.code == ResultCode.DO_NOT_CONTINUE
    assert "is disabled" in run.result.message


async def test_job_finished_other_endpoint_sets_nothing_and_404_stops(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    route = shoptet_api.get("/api/system/jobs/3ax1844").mock(
        side_effect=[
            httpx.Response(200, json=envelope({"job": job("/api/products/images")})),
            httpx.Response(404, json=error_body("job-not-found", "no such job")),
        ]
    )
    run = await harness.run(ShoptetJobFinishedWebhook(), webhook(), ctx=no_install_context(harness))
    assert run.result.code == ResultCode.SUCCESS
    assert harness.store.setting_writes == []
    with pytest.raises(StopError):
        await harness.run(ShoptetJobFinishedWebhook(), webhook(), ctx=no_install_context(harness))
    assert route.call_count == 2


async def test_job_finished_bad_payload_and_missing_factory(harness: Harness) -> None:
    with pytest.raises(StopError, match="invalid input body"):
        await harness.run(ShoptetJobFinishedWebhook(), {"event": "job:finished"}, ctx=no_install_context(harness))
    with pytest.raises(StopError, match="client_factory"):
        await harness.run(ShoptetJobFinishedWebhook(), webhook(), ctx=harness.context(install=False))


# -- parse-json-lines -------------------------------------------------------------------------------


def jsonl(count: int) -> bytes:
    return b"".join(json.dumps({"code": str(n), "items": []}).encode() + b"\n" for n in range(count))


async def test_parse_json_lines_emits_lists_of_50(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    route = shoptet_api.get(RESULT_URL).mock(return_value=httpx.Response(200, content=gzip.compress(jsonl(120))))

    run = await harness.run(ShoptetParseJsonLines(), job())

    assert run.result.code == ResultCode.SUCCESS
    assert [len(batch) for batch in run.emitted] == [50, 50, 20]
    assert [o["code"] for batch in run.emitted for o in batch] == [str(n) for n in range(120)]
    assert route.call_count == 1


async def test_parse_json_lines_not_completed(harness: Harness) -> None:
    run = await harness.run(ShoptetParseJsonLines(), job(status="pending"))
    assert run.result.code == ResultCode.STOP_AND_FAIL
    assert run.result.message == "Job [jobId=3ax1844] from shoptet is not completed. Its status is pending."
    assert run.emitted == []
    failed = {**job(status="failed"), "log": "Export failed: too many items"}
    run = await harness.run(ShoptetParseJsonLines(), failed)
    assert run.result.message == (
        "Job [jobId=3ax1844] from shoptet is not completed. Its status is failed; Shoptet's log: "
        "Export failed: too many items"
    )


@pytest.mark.parametrize("status", ["pending", "running"])
async def test_a_job_finished_webhook_ahead_of_its_job_is_retried(
    harness: Harness, shoptet_api: respx.MockRouter, status: str
) -> None:
    """Passed on, the unfinished job failed parsing, and a replay of its trash entry never fetched
    the job again: the export was lost."""
    shoptet_api.get("/api/system/jobs/3ax1844").mock(
        return_value=httpx.Response(200, json=envelope({"job": job(status=status)}))
    )
    with pytest.raises(RetryableError, match=f"job 3ax1844 is still {status}"):
        await harness.run(ShoptetJobFinishedWebhook(), webhook(), ctx=no_install_context(harness))


async def test_parse_json_lines_expired_file_and_bad_files(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    shoptet_api.get(RESULT_URL).mock(
        side_effect=[
            httpx.Response(404),
            httpx.Response(200, content=b"not gzip at all"),
            httpx.Response(200, content=gzip.compress(b'{"ok": 1}\n{broken\n')),
        ]
    )
    with pytest.raises(StopError):
        await harness.run(ShoptetParseJsonLines(), job())
    with pytest.raises(StopError, match="not valid gzip"):
        await harness.run(ShoptetParseJsonLines(), job())
    with pytest.raises(StopError, match="line 2 is not JSON"):
        await harness.run(ShoptetParseJsonLines(), job())


async def test_a_retry_after_a_cut_download_goes_on_after_the_lines_already_emitted(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    """The file does not change: every retry sent the whole file again from line 1 (a million-line
    export cut at 90% put millions of duplicates on the sink)."""
    whole = gzip.compress(jsonl(400))
    route = shoptet_api.get(RESULT_URL).mock(
        side_effect=[httpx.Response(200, content=whole[: len(whole) // 2]), httpx.Response(200, content=whole)]
    )
    with pytest.raises(RetryableError, match="truncated") as cut:
        await harness.run(ShoptetParseJsonLines(), job())
    assert cut.value.resume is not None and cut.value.resume["skip"] > 0
    first = [o["code"] for batch in harness.emitted for o in batch]
    assert len(first) == cut.value.resume["skip"]

    again = await harness.run(ShoptetParseJsonLines(), job(), cursor=cut.value.resume)

    rest = [o["code"] for batch in again.emitted for o in batch]
    assert first + rest == [str(n) for n in range(400)]  # each line once
    assert again.result.message == "job 3ax1844: 400 line(s)"
    assert route.call_count == 2


async def test_large_lines_go_in_smaller_messages_under_the_record_limit(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    """Fifty lines of 25 KB passed the broker's 1 MiB a record, and the whole export stopped there."""
    big = b"".join(json.dumps({"code": str(n), "description": "x" * 25_000}).encode() + b"\n" for n in range(60))
    shoptet_api.get(RESULT_URL).mock(return_value=httpx.Response(200, content=gzip.compress(big)))

    run = await harness.run(ShoptetParseJsonLines(), job())

    assert [o["code"] for batch in run.emitted for o in batch] == [str(n) for n in range(60)]
    assert len(run.emitted) >= 2  # not one message of 50 (1.25 MB)
    assert max(len(json.dumps(batch)) for batch in run.emitted) < 800 * 1024


async def test_an_export_sent_whole_is_not_sent_again_when_only_recording_it_failed(
    harness: Harness, shoptet_api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    route = shoptet_api.get(RESULT_URL).mock(return_value=httpx.Response(200, content=gzip.compress(jsonl(3))))
    stored_setting(harness, shoptet.FULL_SNAPSHOT_JOB["/api/orders/snapshot"], "3ax1844")
    real = harness.store.set_setting

    async def store_down(*args: Any) -> None:
        raise StoreUnavailable("database restarting")

    monkeypatch.setattr(harness.store, "set_setting", store_down)
    with pytest.raises(StoreUnavailable) as down:
        await harness.run(ShoptetParseJsonLines(), job())
    assert down.value.resume == {"skip": 3, "sent": True}
    monkeypatch.setattr(harness.store, "set_setting", real)

    again = await harness.run(ShoptetParseJsonLines(), job(), cursor=down.value.resume)

    assert again.emitted == [] and route.call_count == 1
    assert [w[2:] for w in harness.store.setting_writes] == [(shoptet.LAST_RUN_ORDER_CHANGES, "2024-05-20T09:00:00Z")]


async def test_an_empty_download_is_no_export_of_nothing(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    """Even an export of nothing is a gzip file; no bytes at all parsed as zero lines, and a full
    export then moved the change feed past every change."""
    shoptet_api.get(RESULT_URL).mock(return_value=httpx.Response(200, content=b""))
    with pytest.raises(RetryableError, match="empty"):
        await harness.run(ShoptetParseJsonLines(), job())


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_gunzip_is_incremental_and_handles_members() -> None:
    payload = jsonl(3000)
    compressed = gzip.compress(payload[:70000]) + gzip.compress(payload[70000:])  # two gzip members
    pieces = [piece async for piece in gunzip(chunks_of(compressed, 997))]
    assert b"".join(pieces) == payload
    assert max(len(p) for p in pieces) <= parse_json_lines.MAX_INFLATE_STEP


async def test_a_truncated_file_is_refused_even_when_cut_at_a_line_break() -> None:
    """Read as a shorter file, it moved a full export's watermark past the lines that never came."""
    payload = jsonl(3000)
    cut = payload.index(b"\n", 70000) + 1  # at a line break
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = compressor.compress(payload[:cut]) + compressor.flush(zlib.Z_FULL_FLUSH)
    whole = first + compressor.compress(payload[cut:]) + compressor.flush()
    assert b"".join([p async for p in gunzip(chunks_of(whole, 997))]) == payload
    with pytest.raises(RetryableError, match="truncated"):  # most likely a cut download
        [p async for p in gunzip(chunks_of(first, 997))]


async def test_a_line_that_is_not_json_can_be_left_out_by_a_replay(
    harness: Harness, shoptet_api: respx.MockRouter
) -> None:
    """Lines were parsed before the cursor's ``skip`` was looked at: a bad line failed every replay
    whatever the cursor said, and the rest of the export never went out."""
    shoptet_api.get(RESULT_URL).mock(
        return_value=httpx.Response(200, content=gzip.compress(b'{"code": "1"}\n\n{broken\n{"code": "3"}\n'))
    )
    with pytest.raises(StopError, match=r"line 3 is not JSON.*--cursor '\{\"skip\": 2\}'") as bad:
        await harness.run(ShoptetParseJsonLines(), job())
    assert bad.value.resume == {"skip": 1}
    assert harness.emitted == [[{"code": "1"}]]  # the lines before it went out

    replay = await harness.run(ShoptetParseJsonLines(), job(), cursor={"skip": 2})  # as the error says

    assert replay.emitted == [[{"code": "3"}]]


async def test_a_long_file_goes_on_in_the_next_hop(
    harness: Harness, shoptet_api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file whose lines take longer than a hop may: a stop or a rebalance, which wait for running
    records only so long, cut it off half-way, and it was read again from its first line."""
    monkeypatch.setattr(parse_json_lines, "MAX_HOP_SECONDS", 0.0)  # every hop ends after a message
    monkeypatch.setattr(parse_json_lines, "MIN_HOP_EMIT_SECONDS", 0.0)
    shoptet_api.get(RESULT_URL).mock(return_value=httpx.Response(200, content=gzip.compress(jsonl(120))))
    cursor = None
    codes: list[str] = []
    for _ in range(3):
        run = await harness.run(ShoptetParseJsonLines(), job(), cursor=cursor)
        codes += [o["code"] for batch in run.emitted for o in batch]
        if run.result.code != ResultCode.BATCH_CURSOR_WITH_ITEMS:
            break
        cursor = run.result.cursor
    assert run.result.code == ResultCode.SUCCESS
    assert codes == [str(n) for n in range(120)]  # each line once, over three hops


async def test_a_hop_counts_its_time_from_its_first_new_line(
    harness: Harness, shoptet_api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each hop downloads the file again and skips what earlier hops sent: counted from before the
    download, a slow one left each hop one message, and a big export thousands of hops."""
    monkeypatch.setattr(parse_json_lines, "MAX_HOP_SECONDS", 0.5)
    monkeypatch.setattr(parse_json_lines, "MIN_HOP_EMIT_SECONDS", 0.5)
    whole = gzip.compress(jsonl(200))

    async def slow_download() -> AsyncIterator[bytes]:
        await asyncio.sleep(1.0)  # the lines sent before arrive slowly
        yield whole

    shoptet_api.get(RESULT_URL).mock(side_effect=lambda request: httpx.Response(200, content=slow_download()))

    run = await harness.run(ShoptetParseJsonLines(), job(), cursor={"skip": 100})

    assert run.result.code == ResultCode.SUCCESS
    assert [o["code"] for batch in run.emitted for o in batch] == [str(n) for n in range(100, 200)]


async def test_memory_stays_flat_for_a_big_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """A highly compressible 64 MiB file inflates in small steps, never whole."""
    monkeypatch.setattr(parse_json_lines, "MAX_INFLATE_STEP", 64 * 1024)
    line = json.dumps({"code": "x" * 1000}).encode() + b"\n"
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    compressed = b"".join(compressor.compress(line * 1024) for _ in range(64)) + compressor.flush()
    sizes: list[int] = []

    async def measured(source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for piece in source:
            sizes.append(len(piece))
            yield piece

    lines = 0
    async for _, text in text_lines(measured(gunzip(chunks_of(compressed, 65536)))):
        lines += 1
        assert text == line[:-1]
    assert lines == 64 * 1024
    assert sum(sizes) == 64 * 1024 * len(line)
    assert max(sizes) <= 64 * 1024


async def test_result_file_is_fetched_from_its_absolute_url(harness: Harness, shoptet_api: respx.MockRouter) -> None:
    shoptet_api.get(RESULT_URL).mock(return_value=httpx.Response(200, content=gzip.compress(jsonl(1))))
    await harness.run(ShoptetParseJsonLines(), job())
    assert not str(shoptet_api.calls.last.request.url).startswith(API)
