"""The simulator's own throughput (``bench/simulator_throughput.py``) as a table row.

It must serve more than the worker can ask of it, or benchmarks 1 and 2 would measure the
simulator: the limit is what benchmark 2 needs at most, ``10 x 3 / L`` with L = 50 ms (600 req/s).
"""

from __future__ import annotations

from bench import simulator_throughput
from bench.common import BenchResult, env_float, env_int, throughput_result

NAME = "simulator"
TARGET = 1.0


async def run(seconds: float | None = None) -> BenchResult:
    """``seconds`` of load (BENCH_SIM_SECONDS, 5)."""
    needed = env_int("BENCH_ESHOPS", 10) * 3 / (env_float("BENCH_LATENCY_MS", 50.0) / 1000)
    metrics = await simulator_throughput.run(seconds=seconds)
    rate = float(metrics["requests_per_second"])
    result = throughput_result(NAME, rate, "req/s", needed, TARGET, extra_ok=metrics["sim_served429"] == 0)
    result.notes += [
        f"zero latency, {metrics['clients']} keep-alive clients over {metrics['tokens']} tokens, "
        f"{metrics['requests']} requests in {metrics['seconds']}s; p50 {metrics['latency_ms_p50']} ms, "
        f"p95 {metrics['latency_ms_p95']} ms",
        f"limit = what benchmark 2 needs at most ({needed:.0f} req/s); 429: {metrics['sim_served429']}",
    ]
    result.details.update(requests=int(metrics["requests"]), served429=int(metrics["sim_served429"]))
    return result
