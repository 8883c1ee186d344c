"""Topics the cluster refuses to create are an error, not "topics created"."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.protocol.admin import CreateTopicsResponse_v0, CreateTopicsResponse_v1

from worker import kafka
from worker.kafka import TopicsNotCreated, ensure_topics
from worker.settings import Settings


class _Admin:
    """Answers CreateTopics as a cluster with one broker answers a replication factor of 3."""

    answer: Any = None

    def __init__(self, **options: Any) -> None:
        pass

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return ["shoptet.retry"]

    async def create_topics(self, new: list[Any]) -> Any:
        return self.answer


@pytest.mark.parametrize(
    "answer",
    [
        CreateTopicsResponse_v1(
            topic_errors=[
                ("shoptet.node.a", 38, "Replication factor: 3 larger than available brokers: 1."),
                ("shoptet.node.b", 36, "Topic 'shoptet.node.b' already exists."),
                ("shoptet.node.c", 0, None),
            ]
        ),
        CreateTopicsResponse_v0(topic_errors=[("shoptet.node.a", 38), ("shoptet.node.b", 36), ("shoptet.node.c", 0)]),
    ],
    ids=["with messages", "codes only"],
)
async def test_a_topic_the_cluster_refuses_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch, answer: Any) -> None:
    """aiokafka returns the refusals instead of raising: they were logged as "topics created", and
    the worker ran on with consumers that got no partitions."""
    monkeypatch.setattr(_Admin, "answer", answer)
    monkeypatch.setattr(kafka, "AIOKafkaAdminClient", _Admin)
    with pytest.raises(TopicsNotCreated) as refused:
        await ensure_topics(Settings(), "127.0.0.1:1", ["shoptet.node.a", "shoptet.node.b", "shoptet.node.c"])
    message = str(refused.value)
    assert "shoptet.node.a" in message and "shoptet.node.b" not in message and "shoptet.node.c" not in message
    assert "Replication factor: 3" in message or "InvalidReplicationFactorError" in message
