"""Benchmark 5: time from ``shoptet-worker up`` to ready with every node consumer.

Spawns ``shoptet-worker up --no-http`` (embedded broker, every topology in ``topology/``) in a temp
working dir with its own SQLite store and secret key, and stops the clock at the ``worker ready``
log line, which the worker writes once every consumer has joined its group. Then SIGTERM.
Target: under 15 s.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from bench.common import TOPOLOGY_DIR, BenchResult, ceiling_result

NAME = "startup"
CEILING_SECONDS = 15.0
READY = re.compile(r"worker ready.*?nodes=(\d+)")


def worker_command() -> list[str]:
    script = Path(sys.executable).with_name("shoptet-worker")
    if script.exists():
        return [str(script), "up", "--no-http"]
    return [sys.executable, "-c", "from worker.cli import main; main()", "up", "--no-http"]


def measure_startup(timeout: float = 120.0) -> tuple[float, int, float]:
    """Seconds to ``worker ready``, the node count it reports, and seconds to exit after SIGTERM."""
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{Path(tmp) / 'store.sqlite3'}",
            "SECRET_KEY_FILE": str(Path(tmp) / "secret.key"),
            "TOPOLOGY_DIR": str(TOPOLOGY_DIR),
            "LOG_FORMAT": "console",
            "LOG_LEVEL": "INFO",
            "KAFKA_BOOTSTRAP_SERVERS": "",
            "REDIS_URL": "",
        }
        started = time.perf_counter()
        proc = subprocess.Popen(
            worker_command(), cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        assert proc.stderr is not None
        try:
            ready_at, nodes = _wait_ready(proc, started, timeout)
        finally:
            stopping = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return ready_at - started, nodes, time.perf_counter() - stopping


def _wait_ready(proc: subprocess.Popen[str], started: float, timeout: float) -> tuple[float, int]:
    """The time of the `worker ready` line and its node count; an error past ``timeout`` even when
    the worker says nothing more (read line by line on the main thread, a silent hang waited forever)."""
    assert proc.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def read(stream: IO[str]) -> None:  # drained to the end, so the worker never blocks on a full pipe
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, args=(proc.stderr,), daemon=True).start()
    tail: list[str] = []
    while (left := started + timeout - time.perf_counter()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:  # the worker exited
            break
        tail = [*tail[-20:], line]
        if (match := READY.search(_plain(line))) is not None:
            return time.perf_counter(), int(match.group(1))
    raise RuntimeError(f"no `worker ready` line within {timeout:g} s (exit code {proc.poll()}):\n{''.join(tail)}")


def _plain(line: str) -> str:
    """Without ANSI colours, in case the console renderer thinks it has a terminal."""
    return re.sub(r"\x1b\[[0-9;]*m", "", line)


async def run() -> BenchResult:
    seconds, nodes, stop_seconds = await asyncio.to_thread(measure_startup)
    result = ceiling_result(NAME, seconds, "s to ready", CEILING_SECONDS)
    result.notes += [
        f"`shoptet-worker up --no-http`, embedded broker, every topology in topology/: {nodes} node consumers "
        "(+ retry, inbound, process tracker)",
        f"stopped by SIGTERM in {stop_seconds:.1f}s",
    ]
    result.details.update(nodes=nodes, stop_seconds=round(stop_seconds, 1))
    return result
