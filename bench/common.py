"""What every benchmark shares: the result row, machine info, quiet logs and worker settings."""

from __future__ import annotations

import os
import platform
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from worker.logging import configure_logging
from worker.settings import Settings

REPO = Path(__file__).resolve().parents[1]
TOPOLOGY_DIR = REPO / "topology"


@dataclass
class BenchResult:
    """One row of the table: a measured value, the limit it is compared with, and the verdict.

    ``ratio`` is ``value / limit`` for throughputs and ``limit / value`` for costs (memory, time),
    so that a higher ratio is always better and ``target`` is always a lower bound on it.
    """

    name: str
    value: float
    unit: str
    limit: float | None
    ratio: float | None
    target: float | None
    passed: bool | None
    notes: list[str] = field(default_factory=list)
    details: dict[str, float | int | str] = field(default_factory=dict)
    #: Set when the benchmark crashed instead of measuring.
    error: str | None = None

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "ERROR"
        if self.passed is None:
            return "n/a"
        return "ok" if self.passed else "MISSED"


def throughput_result(
    name: str, value: float, unit: str, limit: float, target: float, *, extra_ok: bool = True
) -> BenchResult:
    """A "more is better" row: ratio = value / limit, passed when ratio >= target (and ``extra_ok``)."""
    ratio = value / limit if limit else None
    passed = ratio is not None and ratio >= target and extra_ok
    return BenchResult(name, value, unit, limit, ratio, target, passed)


def ceiling_result(name: str, value: float, unit: str, ceiling: float) -> BenchResult:
    """A "less is better" row (memory, seconds): ratio = ceiling / value, passed when value < ceiling."""
    ratio = ceiling / value if value else None
    return BenchResult(name, value, unit, ceiling, ratio, 1.0, value < ceiling)


def env_int(name: str, default: int) -> int:
    """A size from the environment (``BENCH_ORDERS=2000``), else the issue's default."""
    value = os.environ.get(name)
    return int(value) if value else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def quiet_logs(level: str = "WARNING") -> None:
    """The worker logs every hop at INFO; a benchmark only wants warnings."""
    configure_logging("console", os.environ.get("BENCH_LOG_LEVEL", level))


def bench_settings(bootstrap: str, workdir: Path, **overrides: object) -> Settings:
    """Worker settings for one benchmark: its own topic prefix, SQLite store and secret key."""
    values: dict[str, object] = {
        "kafka_bootstrap_servers": bootstrap,
        "kafka_topic_prefix": f"b{uuid.uuid4().hex[:8]}",
        "kafka_partitions": 3,
        "database_url": f"sqlite:///{workdir / 'store.sqlite3'}",
        "secret_key_file": workdir / "secret.key",
        "kafka_session_timeout_ms": 6000,
        "graceful_timeout_seconds": 5,
        "default_retry_interval_seconds": 1.0,
        "log_level": "WARNING",
    }
    values.update(overrides)
    # explicit values win over the environment, so a developer's KAFKA_*/DATABASE_URL cannot leak in
    return Settings.model_validate(values)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, str]:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count() or "?"),
        "python": sys.version.split()[0],
        "platform": platform.platform(terse=True),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load average at start": load,
    }
