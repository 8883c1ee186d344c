"""`shoptet-worker trash list|show|replay|discard` against a real store and broker."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from tests.runtime.helpers import SinkReader, settings_env
from worker.cli import app
from worker.envelope import H
from worker.settings import Settings
from worker.store import InstallStore, TrashEntry

runner = CliRunner()


async def _cli(settings: Settings, *args: str) -> str:
    result = await asyncio.to_thread(runner.invoke, app, ["trash", *args], env=settings_env(settings))
    assert result.exit_code == 0, result.output
    return result.output


async def test_list_show_replay_with_edited_body_and_discard(worker_settings: Settings, store: InstallStore) -> None:
    topic = f"{worker_settings.kafka_topic_prefix}.node.shoptet-get-order-detail"
    headers = {H.USER: "shop-1", H.PROCESS_ID: "p1", H.REPEAT_HOPS: "10", H.NODE_ID: "detail"}
    first = await store.add_trash(
        TrashEntry(
            topic=topic,
            error_class="StopError",
            error_message="404 not-found",
            http_status=404,
            headers=headers,
            key="shop-1",
            body={"code": "WRONG"},
            node_name="shoptet-get-order-detail",
        )
    )
    second = await store.add_trash(
        TrashEntry(topic=topic, error_class="MalformedMessage", error_message="body is not JSON", raw_body="{x")
    )

    listed = [json.loads(line) for line in (await _cli(worker_settings, "list", "--json")).splitlines()]
    assert [e["id"] for e in listed] == [first, second]
    page_2 = await _cli(worker_settings, "list", "--json", "--after", str(first))
    assert [json.loads(line)["id"] for line in page_2.splitlines()] == [second]
    shown = json.loads(await _cli(worker_settings, "show", str(first)))
    assert shown["http_status"] == 404 and shown["body"] == {"code": "WRONG"}

    output = await _cli(worker_settings, "replay", str(first), "--body", '{"code": "2025000001"}')
    assert f"replayed {first}" in output
    [replayed] = await SinkReader(worker_settings.kafka_bootstrap_servers, topic).collect_until(lambda ms: len(ms) >= 1)
    assert replayed.body == {"code": "2025000001"}
    assert replayed.headers[H.PROCESS_ID] == "p1" and replayed.key() == b"shop-1"
    assert H.REPEAT_HOPS not in replayed.headers  # a replay starts its retries afresh

    refused = await asyncio.to_thread(
        runner.invoke, app, ["trash", "replay", str(second)], env=settings_env(worker_settings)
    )
    assert refused.exit_code == 1 and "no decodable body" in refused.output
    assert "discarded" in await _cli(worker_settings, "discard", str(second))
    assert await store.count_trash() == 0  # the replayed entry left trash only after the broker had it
