"""How many requests per second the simulator serves with zero latency.

30 concurrent clients spread over 10 private tokens (3 per token: Shoptet's connection limit, so
no 429s), each on its own keep-alive connection, call a mix of the endpoints the nodes use for a
few seconds. The simulator runs in a child process (``bench.sim``), so the client's own CPU does
not count against it; the leaky bucket is off, everything else is as Shoptet documents it.

Run: ``python bench/simulator_throughput.py`` (``BENCH_SIM_SECONDS``, ``BENCH_SIM_CLIENTS``,
``BENCH_SIM_TOKENS`` change the load). ``await run()`` returns the metrics for a bench runner.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench.common import env_float, env_int
from bench.sim import BenchSimulator

CONTENT_TYPE = "application/vnd.shoptet.v1.0"


def workload(codes: list[str]) -> list[str]:
    """The request mix: lists, details and e-shop info, as an order import makes them."""
    paths = [f"/api/orders/{code}?include=shippingDetails,notes,surchargeParameters" for code in codes[:20]]
    paths += [f"/api/orders?page={page}" for page in range(1, 5)]
    paths += ["/api/eshop?include=orderStatuses,paymentMethods,shippingMethods", "/api/stocks"]
    paths += ["/api/orders/changes?from=2000-01-01T00:00:00Z&itemsPerPage=100"]
    return paths


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One keep-alive HTTP/1.1 GET; returns the status. The simulator always sends Content-Length."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return int(lines[0].split(b" ", 2)[1])


async def _client(
    url: str, token: str, paths: list[str], offset: int, deadline: float, latencies: list[float], statuses: Counter[int]
) -> None:
    """One client, one connection, one request at a time (so 3 clients per token stay within Shoptet's limit).

    A minimal client rather than httpx: on a 2-core machine httpx needs more CPU per request than
    the simulator does (and its pool slows down with 30 concurrent requests), so it would measure itself.
    """
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    requests = [
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nShoptet-Private-API-Token: {token}\r\n"
        f"Content-Type: {CONTENT_TYPE}\r\n\r\n".encode()
        for path in paths
    ]
    n = offset
    try:
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                statuses[await _get(reader, writer, requests[n % len(requests)])] += 1
            except (OSError, asyncio.IncompleteReadError):
                statuses[0] += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, int(port))
            latencies.append(time.monotonic() - started)
            n += 1
    finally:
        writer.close()


async def run(seconds: float | None = None, clients: int | None = None, tokens: int | None = None) -> dict[str, Any]:
    """Measure; returns req/s, latency percentiles, statuses and what the simulator itself counted."""
    seconds = seconds if seconds is not None else env_float("BENCH_SIM_SECONDS", 5.0)
    clients = clients if clients is not None else env_int("BENCH_SIM_CLIENTS", 30)
    tokens = tokens if tokens is not None else env_int("BENCH_SIM_TOKENS", 10)
    async with BenchSimulator(orders=200, eshops=tokens, latency_ms=0.0) as sim:
        async with httpx.AsyncClient(base_url=sim.url, timeout=30) as http:
            headers = {"Shoptet-Private-API-Token": sim.tokens[0], "Content-Type": CONTENT_TYPE}
            orders = (await http.get("/api/orders", headers=headers)).json()["data"]["orders"]
            paths = workload([o["code"] for o in orders])
            await http.post("/_sim/stats/reset")
            latencies: list[float] = []
            statuses: Counter[int] = Counter()
            started = time.monotonic()
            deadline = started + seconds
            await asyncio.gather(
                *(
                    _client(sim.url, sim.tokens[i % len(sim.tokens)], paths, i, deadline, latencies, statuses)
                    for i in range(clients)
                )
            )
            elapsed = time.monotonic() - started
        stats = await sim.stats()
    total = sum(statuses.values())
    ordered = sorted(latencies)
    return {
        "requests": total,
        "seconds": round(elapsed, 3),
        "requests_per_second": round(total / elapsed, 1),
        "ok": sum(n for status, n in statuses.items() if 200 <= status < 300),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "latency_ms_p50": round(statistics.median(ordered) * 1000, 2) if ordered else None,
        "latency_ms_p95": round(ordered[int(len(ordered) * 0.95)] * 1000, 2) if ordered else None,
        "clients": clients,
        "tokens": tokens,
        "sim_served429": stats["served429"],
        "sim_max_concurrency_per_token": max(stats["maxConcurrencyPerToken"].values(), default=0),
        "sim_requests": stats["requests"]["total"],
    }


def main() -> None:
    metrics = asyncio.run(run())
    print(
        f"simulator throughput: {metrics['requests_per_second']} req/s "
        f"({metrics['requests']} requests in {metrics['seconds']} s, {metrics['clients']} clients "
        f"over {metrics['tokens']} tokens; p50 {metrics['latency_ms_p50']} ms, p95 {metrics['latency_ms_p95']} ms)"
    )
    for key, value in metrics.items():
        print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
