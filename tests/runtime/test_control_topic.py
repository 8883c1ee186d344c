"""The control topic holds every deploy for good, so it must be compacted: plain retention drops
deploys older than a week, and a worker started after that would not know its topologies."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from structlog.testing import capture_logs

from worker import kafka
from worker.kafka import cleanup_policy
from worker.settings import Settings


async def test_a_new_control_topic_is_created_compacted(worker_settings: Settings) -> None:
    bootstrap, topic = worker_settings.kafka_bootstrap_servers, f"{worker_settings.kafka_topic_prefix}.control"
    with capture_logs() as logs:
        await kafka.ensure_control_topic(worker_settings, bootstrap, topic)
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
        await kafka.ensure_control_topic(worker_settings, bootstrap, topic)
    [error] = [e for e in logs if e["log_level"] == "error"]
    assert error["topic"] == topic and error["cleanup_policy"] == policy
    assert "set cleanup.policy=compact" in error["event"]


def test_a_pointer_read_before_its_version_is_followed_once_the_version_comes() -> None:
    """A control topic of several partitions (created by a broker's defaults) keeps no order
    between a version record and its pointer: read pointer first, the worker ran the version before
    for good (one start in five did so)."""
    import json

    from worker.catalog import TopologyCatalog
    from worker.registry import default_registry

    catalog = TopologyCatalog(default_registry())
    source = (
        "name: t\nstart: [{manual: true}]\nnodes:\n  a: {node: shoptet-get-eshop-info, next: [out]}\n  out: {sink: s}\n"
    )

    def version(v: str) -> None:
        catalog.apply(f"version:t:{v}", json.dumps({"name": "t", "version": v, "source": source + f"# {v}\n"}).encode())

    def pointer(v: str) -> None:
        record = {"name": "t", "version": v, "enabled": True, "deployed_at": ""}
        catalog.apply("current:t", json.dumps(record).encode())

    version("v1")
    pointer("v1")
    pointer("v2")  # its version record is in another partition, read later
    assert catalog.current["t"].version == "v1"
    version("v2")
    assert catalog.current["t"].version == "v2"
    active = catalog.active("t")
    assert active is not None and active.version == "v2"


async def test_the_ingress_and_the_cli_create_the_control_topic_compacted(worker_settings: Settings) -> None:
    """Read before any worker made it, the broker created it with its defaults (four partitions,
    not compacted) and nothing ever fixed it."""
    from worker.control import control_client

    async with control_client(worker_settings):
        pass
    bootstrap = worker_settings.kafka_bootstrap_servers
    topic = f"{worker_settings.kafka_topic_prefix}.control.topologies"
    assert await cleanup_policy(worker_settings, bootstrap, topic) == "compact"
