"""Which cron starts a minute fires, without a broker."""

from __future__ import annotations

from datetime import UTC, datetime

from worker.scheduler import due_starts
from worker.topology import parse_topology

SOURCE = """\
name: {name}
start:
  - cron: "*/5 * * * *"
nodes:
  first: {{node: shoptet-get-order-detail}}
"""


def test_a_cron_croniter_cannot_match_is_skipped_not_fatal_to_the_tick() -> None:
    """Such a cron may come from a version deployed before crons were checked as strictly now."""
    broken, good = (parse_topology(SOURCE.format(name=name)) for name in ("broken", "good"))
    broken.topology.start[0].cron = "H * * * *"  # is_valid refuses it today; match raises
    minute = datetime(2024, 5, 2, 10, 5, tzinfo=UTC)
    assert [(tv.name, start.cron) for tv, start in due_starts([broken, good], minute)] == [("good", "*/5 * * * *")]
