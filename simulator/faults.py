"""Fault injection: which API requests get a 500, 503, 429, 423, a dropped connection or a slow answer.

The choice comes from one ``random.Random(seed)``, so a client that sends requests in the same order
sees the same faults on every run.
"""

from __future__ import annotations

import logging
import random

from simulator.config import FaultKind, SimulatorConfig


class DroppedConnection(Exception):
    """Raised mid-response to make the server close the connection without a complete answer."""


class _HideDroppedConnections(logging.Filter):
    """A dropped connection is an injected fault, not a crash worth a traceback in uvicorn's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DroppedConnection))


def hide_dropped_connection_tracebacks() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDroppedConnections) for f in logger.filters):
        logger.addFilter(_HideDroppedConnections())


class FaultPlan:
    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"{seed}:faults")

    def pick(self, config: SimulatorConfig) -> FaultKind | None:
        if config.fault_rate <= 0 or not config.fault_kinds:
            return None
        if self._rng.random() >= config.fault_rate:
            return None
        return self._rng.choice(config.fault_kinds)
