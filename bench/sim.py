"""The Shoptet simulator for a benchmark: in a child process (default) or in a thread of this one.

On a 2-core machine the worker and the simulator fight for one GIL when they share a process, so a
child process is the default (``BENCH_SIM_MODE=thread`` for the in-process variant). Either way the
benchmark reads tokens and counters over HTTP (``/_sim/eshops``, ``/_sim/stats``), so the code
that measures does not depend on where the simulator runs.

Run as ``python -m bench.sim --port P --orders N --eshops E --latency-ms 50 [--no-bucket]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from types import TracebackType
from typing import Any, Literal

import httpx

from bench.common import REPO
from worker.broker import free_port

SimMode = Literal["process", "thread"]


def sim_mode() -> SimMode:
    mode = os.environ.get("BENCH_SIM_MODE", "process")
    if mode not in ("process", "thread"):
        raise ValueError(f"BENCH_SIM_MODE must be process or thread, not {mode!r}")
    return mode  # type: ignore[return-value]


class BenchSimulator:
    """``async with BenchSimulator(orders=..., eshops=..., latency_ms=...) as sim``: url, tokens, stats."""

    def __init__(
        self,
        *,
        orders: int,
        eshops: int = 1,
        latency_ms: float = 50.0,
        bucket: bool = False,
        mode: SimMode | None = None,
    ) -> None:
        self.orders, self.eshops, self.latency_ms, self.bucket = orders, eshops, latency_ms, bucket
        self.mode: SimMode = mode or sim_mode()
        self.url = ""
        self.tokens: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._server: Any = None
        # no keep-alive: uvicorn closes idle connections after 5 s, and a reused one that is being
        # closed fails the admin call ("Server disconnected without sending a response")
        self._http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))

    async def __aenter__(self) -> BenchSimulator:
        if self.mode == "process":
            await self._start_process()
        else:
            await self._start_thread()
        eshops = (await self._http.get(f"{self.url}/_sim/eshops")).json()
        self.tokens = [e["premiumToken"] for e in eshops]
        return self

    async def _start_process(self, timeout: float = 120.0) -> None:
        port = free_port()
        args = [sys.executable, "-m", "bench.sim", "--port", str(port), "--orders", str(self.orders)]
        args += ["--eshops", str(self.eshops), "--latency-ms", str(self.latency_ms)]
        args += [] if self.bucket else ["--no-bucket"]
        self._proc = subprocess.Popen(args, cwd=REPO)  # noqa: ASYNC220  # returns at once
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout  # seeding 100,000 orders takes a while
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"simulator exited with code {self._proc.returncode}")
            try:
                if (await self._http.get(f"{self.url}/_sim/stats")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"simulator did not answer on {self.url} within {timeout}s")

    async def _start_thread(self) -> None:
        from simulator.server import SimulatorServer

        self._server = SimulatorServer(config(self.orders, self.eshops, self.latency_ms, self.bucket))
        await asyncio.to_thread(self._server.start)
        self.url = self._server.url

    async def stats(self) -> dict[str, Any]:
        """``/_sim/stats``: requests by endpoint and status, 429s, max concurrency per token."""
        response = await self._http.get(f"{self.url}/_sim/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    async def reset_stats(self) -> None:
        """Zero the counters (``POST /_sim/stats/reset``) so that only the measured window counts."""
        (await self._http.post(f"{self.url}/_sim/stats/reset")).raise_for_status()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._http.aclose()
        if self._proc is not None:
            self._proc.terminate()
            try:
                await asyncio.to_thread(self._proc.wait, 10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._server is not None:
            await asyncio.to_thread(self._server.stop)


def config(orders: int, eshops: int, latency_ms: float, bucket: bool, port: int | None = None) -> Any:
    """Shoptet's limits except the leaky bucket, which would cap an import at 10 requests/s."""
    from simulator.config import SimulatorConfig

    return SimulatorConfig(
        orders=orders,
        products=0,
        eshops=eshops,
        latency_ms=latency_ms,
        bucket_enabled=bucket,
        public_url=f"http://127.0.0.1:{port}" if port else None,
    )


def count_ok(stats: dict[str, Any], *endpoints: str) -> int:
    """Requests answered 2xx, on the given endpoints (``GET /api/orders``) or on all of them."""
    by_endpoint: dict[str, dict[str, int]] = stats["requests"]["byEndpoint"]
    return sum(
        n
        for endpoint, statuses in by_endpoint.items()
        if not endpoints or endpoint in endpoints
        for status, n in statuses.items()
        if status.startswith("2")
    )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from simulator.app import create_app, freeze_seeded_data

    parser = argparse.ArgumentParser(prog="python -m bench.sim", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--eshops", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--no-bucket", action="store_true")
    args = parser.parse_args(argv)
    app = create_app(config(args.orders, args.eshops, args.latency_ms, not args.no_bucket, args.port))
    freeze_seeded_data()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, backlog=2048)


if __name__ == "__main__":
    main()
