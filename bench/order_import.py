"""Benchmark 1: order import from one e-shop against the simulator at 50 ms per request.

Target: Shoptet requests per second / (3 / L) >= 0.9, with zero 429 from the simulator. The
simulator's leaky bucket (200 drops, 10/s) is disabled: it would cap any import at 10 requests/s
whatever the client does; the 3-connection cap per token stays on.
"""

from __future__ import annotations

from bench.common import BenchResult, env_float, env_int, throughput_result
from bench.importing import ImportRun, run_import

NAME = "order-import"
TARGET = 0.9


async def run(
    orders: int | None = None, latency_ms: float | None = None, detail_concurrency: int | None = None
) -> BenchResult:
    """``orders`` (BENCH_ORDERS, 10,000), ``latency_ms`` (BENCH_LATENCY_MS, 50), ``detail_concurrency``
    (BENCH_DETAIL_CONCURRENCY; default: the topology's own value)."""
    detail_concurrency = detail_concurrency or (env_int("BENCH_DETAIL_CONCURRENCY", 0) or None)
    measured = await run_import(
        orders=orders or env_int("BENCH_ORDERS", 10_000),
        eshops=1,
        latency_ms=latency_ms or env_float("BENCH_LATENCY_MS", 50.0),
        detail_concurrency=detail_concurrency,
    )
    return import_result(NAME, measured, TARGET, detail_concurrency)


def import_result(name: str, run: ImportRun, target: float, detail_concurrency: int | None) -> BenchResult:
    """The table row of an import run: req/s against ``eshops x 3 / L``; any 429 fails it."""
    complete = run.sink_messages >= run.orders * run.eshops
    result = throughput_result(
        name, run.requests_per_second, "req/s", run.limit, target, extra_ok=run.served429 == 0 and complete
    )
    result.notes += [
        f"{run.eshops} e-shop(s) x {run.orders} orders: {run.requests} requests in {run.seconds:.1f}s "
        f"(L = {run.latency_ms:g} ms, limit = {run.eshops} x 3 / L)",
        f"429 from the simulator: {run.served429}; most requests at once per token: {run.max_concurrency_per_token}",
        "simulator leaky bucket disabled (200 drops at 10/s would cap the import at 10 req/s); 3-connection cap on",
        f"detail concurrency: {detail_concurrency or 'as in topology/order-import.yaml'}; "
        f"simulator in a {run.sim_mode}",
    ]
    if run.finished_events:
        result.notes.append(
            f"process finished after {run.seconds_to_finished_event or 0:.1f}s (2 s quiet period): "
            f"retries={run.retries}, trashed={run.trashed}"
        )
    else:
        result.notes.append("no `process finished` event within 30 s after the last order")
    result.details.update(
        seconds=round(run.seconds, 2), requests=run.requests, served429=run.served429, retries=run.retries
    )
    return result
