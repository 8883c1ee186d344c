"""Topic names. Node topics are per node *type*: a node type used by several topologies shares one
topic and one consumer group, and the headers say which topology and version a message belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TopicNames:
    prefix: str = "shoptet"

    def node(self, node_name: str) -> str:
        return f"{self.prefix}.node.{node_name}"

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
        return f"{self.prefix}.processes"

    def inbound_group(self, topic: str) -> str:
        return f"{self.prefix}-worker.inbound.{topic}"
