"""Which offset is safe to commit when messages of a partition finish out of order.

A node works on up to ``concurrency`` messages at once; offset N may finish before N-1. Kafka only
stores one position per partition, so we commit the lowest offset still in flight: everything
below it is done, and a crash redelivers only what was not finished (at-least-once).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class PartitionOffsets:
    in_flight: set[int] = field(default_factory=set)
    highest_seen: int = -1
    committed: int = -1

    def started(self, offset: int) -> None:
        self.in_flight.add(offset)
        self.highest_seen = max(self.highest_seen, offset)

    def finished(self, offset: int) -> None:
        self.in_flight.discard(offset)

    def committable(self) -> int | None:
        """The next offset to commit (Kafka's "next to read"), or None when nothing is new."""
        position = min(self.in_flight) if self.in_flight else self.highest_seen + 1
        return position if position > self.committed and self.highest_seen >= 0 else None
