"""``python -m bench`` (``make bench``): run the benchmarks, print one table, write bench/results.md.

    python -m bench                      # the issue's sizes (several minutes)
    python -m bench --quick              # small sizes, to check that everything runs
    python -m bench --only hop-overhead --only startup   # re-runs those rows of bench/results.md

Sizes can also be set one by one through the environment (BENCH_ORDERS, BENCH_ESHOPS,
BENCH_MANY_ORDERS, BENCH_LATENCY_MS, BENCH_DETAIL_CONCURRENCY, BENCH_HOP_MESSAGES, BENCH_HOP_PAYLOAD, BENCH_HOP_KEYS,
BENCH_HOP_CONCURRENCY, BENCH_HOP_ROUNDS, BENCH_SNAPSHOT_LINES, BENCH_SIM_SECONDS, BENCH_SIM_MODE=process|thread).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import hop_overhead, many_eshops, order_import, simulator_row, snapshot_parsing, startup
from bench.common import BenchResult, machine_info, quiet_logs
from bench.report import load_json, merge, print_table, save_json, write_markdown

Runner = Callable[..., Awaitable[BenchResult]]

#: name -> (run, sizes for --quick); the full sizes are each module's defaults (the issue's).
BENCHMARKS: dict[str, tuple[Runner, dict[str, Any]]] = {
    order_import.NAME: (order_import.run, {"orders": 1_000}),
    many_eshops.NAME: (many_eshops.run, {"orders": 500}),
    hop_overhead.NAME: (hop_overhead.run, {"messages": 2_000, "rounds": 1}),
    snapshot_parsing.NAME: (snapshot_parsing.run, {"lines": 100_000}),
    startup.NAME: (startup.run, {}),
    simulator_row.NAME: (simulator_row.run, {"seconds": 2.0}),
}
RESULTS = Path(__file__).with_name("results.md")


async def run_one(name: str, quick: bool) -> BenchResult:
    runner, quick_sizes = BENCHMARKS[name]
    print(f"running {name}{' (quick)' if quick else ''} ...", flush=True)
    started = time.perf_counter()
    try:
        result = await runner(**(quick_sizes if quick else {}))
    except Exception as exc:  # one broken benchmark must not hide the others' numbers
        traceback.print_exc()
        result = BenchResult(name, float("nan"), "", None, None, None, False, error=repr(exc))
    print(f"  {name}: {result.value:,.2f} {result.unit} ({time.perf_counter() - started:.0f}s)", flush=True)
    return result


async def main_async(names: list[str], quick: bool, output: Path | None) -> list[BenchResult]:
    machine = machine_info()
    results = [await run_one(name, quick) for name in names]
    for result in results:  # each row says which run it is from: --only keeps the others' rows
        result.details["run"] = f"{machine['date']}, {'quick' if quick else 'full'} sizes, {machine['cpu']}"
    print_table(results, machine, quick=quick)
    if output is not None:
        # --only NAME replaces that row of the last run's table and keeps the others
        rows = output.with_suffix(".json")
        table = merge(load_json(rows) if len(names) < len(BENCHMARKS) else [], results, list(BENCHMARKS))
        save_json(rows, table)
        write_markdown(output, table, machine, quick=quick)
        print(f"written {output} and {rows}")
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmarks against Shoptet's limits.")
    parser.add_argument("--quick", action="store_true", help="small sizes (a check that everything runs)")
    parser.add_argument(
        "--only", action="append", choices=list(BENCHMARKS), metavar="NAME", help=f"one of {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="markdown file to write (default: %(default)s)")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logs()
    names = args.only or list(BENCHMARKS)
    results = asyncio.run(main_async(names, args.quick, None if args.no_write else args.output))
    # a missed target is a result (the table says so); only a benchmark that crashed fails the run
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
