"""Topic names. Node topics are per node *type*: a node type used by several topologies shares one
topic and one consumer group, and the headers say which topology and version a message belongs to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: What Kafka accepts as a topic name (a node type's name is part of its topic's and group's).
KAFKA_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


@dataclass(frozen=True, slots=True)
class TopicNames:
    prefix: str = "shoptet"

    @property
    def node_prefix(self) -> str:
        return f"{self.prefix}.node."

    def node(self, node_name: str) -> str:
        return f"{self.node_prefix}{node_name}"

    def group(self, node_name: str) -> str:
        return f"{self.prefix}-worker.{node_name}"

    @property
    def retry(self) -> str:
        return f"{self.prefix}.retry"

    @property
    def control(self) -> str:
        return f"{self.prefix}.control.topologies"

    @property
    def processes(self) -> str:
        """The process ledger (one record per start and per handled message)."""
        return f"{self.prefix}.processes"

    @property
    def process_events(self) -> str:
        """``process finished`` events with the counts, for other systems to consume."""
        return f"{self.prefix}.process-events"

    def is_internal(self, topic: str) -> bool:
        """Whether ``topic`` is one the worker itself writes and reads (never a topology's start or
        sink: a sink into the ledger corrupts its counts, a start on ``process-events`` starts the
        topology again each time it finishes)."""
        own = (self.retry, self.control, self.processes, self.process_events)
        return topic in own or topic.startswith(self.node_prefix)

    def inbound_group(self, topic: str) -> str:
        return f"{self.prefix}-worker.inbound.{topic}"
