"""`shoptet-worker run` against a real store and broker: what an operator types to start a process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from tests.runtime.helpers import SinkReader, settings_env
from worker.cli import app
from worker.envelope import H
from worker.settings import Settings
from worker.store import Install, InstallStore

runner = CliRunner()

TOPOLOGY = """\
name: detail-by-hand
application: shoptet-premium
start:
  - manual: true
nodes:
  detail: {node: shoptet-get-order-detail, next: [out]}
  out: {sink: detail-by-hand.out}
"""


async def test_run_starts_a_process_for_an_install_and_refuses_a_mistyped_user(
    worker_settings: Settings, store: InstallStore, tmp_path: Path
) -> None:
    env = settings_env(worker_settings)
    source = tmp_path / "detail.yaml"
    source.write_text(TOPOLOGY)
    deployed = await asyncio.to_thread(runner.invoke, app, ["topology", "deploy", str(source)], env=env)
    assert deployed.exit_code == 0, deployed.output
    await store.add_install(Install(user="shop-1", application="shoptet-premium", secrets={"token": "t"}))

    refused = await asyncio.to_thread(
        runner.invoke, app, ["run", "detail-by-hand", "--user", "shop-l", "--body", '{"code": "1"}'], env=env
    )
    assert refused.exit_code == 2, refused.output
    assert "shop-l" in refused.output

    started = await asyncio.to_thread(
        runner.invoke, app, ["run", "detail-by-hand", "--user", "shop-1", "--body", '{"code": "2025000001"}'], env=env
    )
    assert started.exit_code == 0, started.output
    ids = json.loads(started.output.strip().splitlines()[-1])

    topic = f"{worker_settings.kafka_topic_prefix}.node.shoptet-get-order-detail"
    messages = await SinkReader(worker_settings.kafka_bootstrap_servers, topic).read_all()
    # one message: the started one; the refused run published nothing
    assert [m.body for m in messages] == [{"code": "2025000001"}]
    [message] = messages
    assert message.process_id == ids["process-id"] and message.correlation_id == ids["correlation-id"]
    assert message.user == "shop-1" and message.key() == b"shop-1"
    assert message.headers[H.NODE_ID] == "detail" and message.headers[H.APPLICATION] == "shoptet-premium"
