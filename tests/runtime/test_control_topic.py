"""The control topic holds every deploy for good, so it must be compacted: plain retention drops
deploys older than a week, and a worker started after that would not know its topologies."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from structlog.testing import capture_logs

from worker import app
from worker.kafka import cleanup_policy
from worker.settings import Settings


async def test_a_new_control_topic_is_created_compacted(worker_settings: Settings) -> None:
    bootstrap, topic = worker_settings.kafka_bootstrap_servers, f"{worker_settings.kafka_topic_prefix}.control"
    with capture_logs() as logs:
        await app._ensure_control_topic(worker_settings, bootstrap, topic)
    assert await cleanup_policy(worker_settings, bootstrap, topic) == "compact"
    assert not [e for e in logs if e["log_level"] == "error"]


@pytest.mark.parametrize(
    ("configs", "policy"),
    [({}, "delete"), ({"cleanup.policy": "compact,delete"}, "compact,delete")],  # both drop old deploys
)
async def test_an_existing_control_topic_that_is_not_compacted_is_reported(
    worker_settings: Settings, configs: dict[str, str], policy: str
) -> None:
    bootstrap, topic = worker_settings.kafka_bootstrap_servers, f"{worker_settings.kafka_topic_prefix}.control"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:  # made by hand, or by a version before compaction
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs=configs)])
    finally:
        await admin.close()
    with capture_logs() as logs:
        await app._ensure_control_topic(worker_settings, bootstrap, topic)
    [error] = [e for e in logs if e["log_level"] == "error"]
    assert error["topic"] == topic and error["cleanup_policy"] == policy
    assert "set cleanup.policy=compact" in error["event"]
