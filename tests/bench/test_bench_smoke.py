"""The benchmarks' code runs end to end at tiny sizes. No timing assertions: numbers are `make bench`'s job."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import hop_overhead, snapshot_parsing
from bench.report import markdown


@pytest.mark.e2e
async def test_hop_overhead_runs_both_sides_at_tiny_size() -> None:
    result = await hop_overhead.run(messages=50, payload_bytes=16, keys=2, concurrency=5, rounds=2, timeout=120)
    assert result.name == "hop-overhead"
    assert result.details["delivered"] == 50
    assert result.limit is not None and result.limit > 0
    assert result.ratio is not None and math.isfinite(result.ratio)
    rounds = result.details["rounds"]
    assert len(rounds) == 2
    # the reported round is one of those measured
    reported = (result.details["worker_msg_per_s"], result.details["raw_msg_per_s"])
    assert reported in [(r["worker_msg_per_s"], r["raw_msg_per_s"]) for r in rounds]


async def test_snapshot_parsing_counts_every_line_and_reports_rss(tmp_path: Path) -> None:
    path = snapshot_parsing.snapshot_file(300, tmp_path)
    with snapshot_parsing.FileServer(path.parent) as server:
        measured = snapshot_parsing.run_child(server.url(path.name), timeout=120)
    assert measured["lines"] == 300
    assert measured["peak_rss_mb"] > 0

    result = await snapshot_parsing.run(lines=300)
    assert result.unit == "MB peak RSS"
    assert result.passed is not None
    assert "snapshot-parsing" in markdown([result], {"cpu": "test"}, quick=True)
