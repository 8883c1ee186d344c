"""A short-lived connection to a running deployment for CLI commands (run, deploy, status).

It finds the broker (``KAFKA_BOOTSTRAP_SERVERS``, else the embedded broker a local ``up`` wrote
into ``var/worker.json``), reads the topology catalog and can publish starts and deployments.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from worker.catalog import CatalogFollower, TopologyCatalog
from worker.envelope import Message
from worker.kafka import ensure_control_topic, make_consumer, make_producer, send_message
from worker.registry import NodeRegistry, default_registry
from worker.settings import Settings
from worker.topics import TopicNames

STATE_FILE = Path("var/worker.json")


def write_state(**values: Any) -> None:
    STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
    STATE_FILE.write_text(json.dumps(values, indent=2))


def read_state() -> dict[str, Any]:
    try:
        data = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class NoKafka(RuntimeError):
    """No broker configured and no local ``up`` to borrow one from (the CLI says so in one line)."""


def resolve_bootstrap(settings: Settings) -> str:
    if settings.kafka_bootstrap_servers:
        return settings.kafka_bootstrap_servers
    state = read_state()
    if not state.get("bootstrap_servers"):
        raise NoKafka(
            "no Kafka to talk to: set KAFKA_BOOTSTRAP_SERVERS, or start `shoptet-worker up` in this directory"
        )
    pid = state.get("pid")
    if state.get("embedded") and isinstance(pid, int) and not _running(pid):  # its broker died with it
        raise NoKafka(
            f"{STATE_FILE} names a `shoptet-worker up` (pid {pid}) that is no longer running: start it"
            " again, or set KAFKA_BOOTSTRAP_SERVERS"
        )
    return str(state["bootstrap_servers"])


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # there, under another user
        return True
    return True


@dataclass
class ControlClient:
    """Just enough of a runtime to start processes and deploy: producer, topics and catalog."""

    producer: AIOKafkaProducer
    topics: TopicNames
    catalog: TopologyCatalog
    bootstrap_servers: str
    metrics: None = None

    async def send(self, topic: str, message: Message) -> asyncio.Future[Any]:
        return await send_message(self.producer, topic, message)


@asynccontextmanager
async def control_client(settings: Settings, registry: NodeRegistry | None = None) -> AsyncIterator[ControlClient]:
    bootstrap = resolve_bootstrap(settings)
    topics = TopicNames(settings.kafka_topic_prefix)
    catalog = TopologyCatalog(registry or default_registry())
    # before it is read: a read of a missing topic made the broker create it with its defaults
    # (several partitions, not compacted), and deploys then went out of order (see the catalog)
    await ensure_control_topic(settings, bootstrap, topics.control)
    producer = make_producer(settings, bootstrap)
    await producer.start()
    follower = CatalogFollower(make_consumer(settings, bootstrap, group_id=None), topics.control, catalog)
    try:
        await follower.start()
        yield ControlClient(producer, topics, catalog, bootstrap)
    finally:
        await follower.stop()
        await producer.stop()
