"""Benchmark 2: ten e-shops imported at once by one worker process (one token each).

Target: total Shoptet requests per second / (10 x 3 / L) >= 0.8, to show the worker scales across
tokens on one machine. Same set-up as :mod:`bench.order_import` (bucket disabled, 3-connection cap on).
"""

from __future__ import annotations

from bench.common import BenchResult, env_float, env_int
from bench.importing import run_import
from bench.order_import import import_result

NAME = "many-eshops"
TARGET = 0.8


async def run(
    orders: int | None = None,
    eshops: int | None = None,
    latency_ms: float | None = None,
    detail_concurrency: int | None = None,
) -> BenchResult:
    """``orders`` per e-shop (BENCH_MANY_ORDERS, else BENCH_ORDERS, else 10,000), ``eshops`` (BENCH_ESHOPS,
    10), ``latency_ms`` (BENCH_LATENCY_MS, 50)."""
    detail_concurrency = detail_concurrency or (env_int("BENCH_DETAIL_CONCURRENCY", 0) or None)
    measured = await run_import(
        orders=orders or env_int("BENCH_MANY_ORDERS", env_int("BENCH_ORDERS", 10_000)),
        eshops=eshops or env_int("BENCH_ESHOPS", 10),
        latency_ms=latency_ms or env_float("BENCH_LATENCY_MS", 50.0),
        detail_concurrency=detail_concurrency,
    )
    return import_result(NAME, measured, TARGET, detail_concurrency)
