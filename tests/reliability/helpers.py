"""Worker child processes for the reliability tests: stderr to a file, and a count of Shoptet requests.

``tests.runtime.helpers.spawn_worker`` pipes stdout only; these tests also want each child's log
(``LOG_LEVEL=INFO``) and proof that the child really called Shoptet, so the child script below counts
the order-detail requests its HTTP client sends and prints the count when it stops.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

CHILD_SCRIPT = """
import asyncio, os, signal, sys
from pathlib import Path
from worker.app import Worker
from worker.logging import configure_logging
from worker.settings import Settings
from worker.topology import load_topology_file

async def main() -> None:
    configure_logging("console", os.environ.get("LOG_LEVEL", "WARNING"))
    worker = Worker(Settings(), node_names=sys.argv[2].split(","))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await worker.start(deploy=[load_topology_file(Path(sys.argv[1]), worker.registry)])
    detail_requests = 0

    async def count(request) -> None:
        nonlocal detail_requests
        if request.url.path.startswith("/api/orders/"):
            detail_requests += 1

    worker.rt.http.event_hooks["request"].append(count)
    print("READY", flush=True)
    await stop.wait()
    await worker.stop()
    print(f"DETAIL_REQUESTS {detail_requests}", flush=True)
    print("STOPPED", flush=True)

asyncio.run(main())
"""


@dataclass
class Child:
    proc: subprocess.Popen[str]
    log_path: Path
    log_file: IO[str]

    async def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        assert line.strip() == "READY", f"worker did not start: {line!r}\n{self.log()[-3000:]}"

    def stop(self, timeout: float = 30.0) -> str:
        """SIGTERM, wait, and return what the child printed after READY (SIGKILL if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.log_file.close()
        return out or ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if not self.log_file.closed:
            self.log_file.close()

    def log(self) -> str:
        if not self.log_file.closed:
            self.log_file.flush()
        return self.log_path.read_text(errors="replace")


def spawn_child(env: dict[str, str], topology: Path, nodes: list[str], log_path: Path) -> Child:
    log_file = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD_SCRIPT, str(topology), ",".join(nodes)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=log_file,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    return Child(proc, log_path, log_file)


def detail_requests(output: str) -> int:
    for line in output.splitlines():
        if line.startswith("DETAIL_REQUESTS "):
            return int(line.split()[1])
    raise AssertionError(f"the child did not report its requests: {output!r}")
