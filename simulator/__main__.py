"""``python -m simulator --port 8090 --orders 1000``: the simulator without the worker's CLI."""

from __future__ import annotations

import argparse

from simulator.cli import run_simulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument("--eshops", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    args = parser.parse_args(argv)
    run_simulator(
        args.port, args.host, args.orders, args.products, args.eshops, args.seed, args.latency_ms, args.fault_rate
    )


if __name__ == "__main__":
    main()
