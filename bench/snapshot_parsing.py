"""Benchmark 4: shoptet-parse-json-lines over a gzipped JSON Lines snapshot of 1,000,000 orders.

The file is generated once (cached in the temp dir by line count and generator) and served by a tiny local HTTP
server. A child process runs only the node, without Kafka: a NodeContext with a real ShoptetClient,
the premium application and an ``emit`` that counts. The child reports lines/s and its own peak RSS
(``VmHWM``), so nothing else this process runs (broker, simulator) is mixed in.
Target: peak RSS under 200 MB.

Run the child alone: ``python -m bench.snapshot_parsing URL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import inspect
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import REPO, BenchResult, ceiling_result, env_int

NAME = "snapshot-parsing"
RSS_CEILING_MB = 200.0


def snapshot_path(lines: int, directory: Path | None = None) -> Path:
    """Where the file of ``lines`` lines is cached: named by the generator's code too, so that a
    file an older generator wrote is not measured as current."""
    generator = hashlib.sha1(inspect.getsource(_order).encode()).hexdigest()[:8]
    return (directory or Path(tempfile.gettempdir()) / "shoptet-bench") / f"orders-{lines}-{generator}.jsonl.gz"


def snapshot_file(lines: int, directory: Path | None = None) -> Path:
    """A gzipped JSONL file of ``lines`` order-like objects; built once per size and reused."""
    path = snapshot_path(lines, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return path
    partial_path = path.with_suffix(f".{os.getpid()}.part")
    rng = random.Random(lines)
    with gzip.open(partial_path, "wt", compresslevel=1, encoding="utf-8") as out:
        for i in range(lines):
            out.write(json.dumps(_order(i, rng), separators=(",", ":")) + "\n")
    partial_path.rename(path)
    return path


def _order(i: int, rng: random.Random) -> dict[str, Any]:
    price = round(rng.uniform(100, 5000), 2)
    return {
        "code": f"{2024000000 + i}",
        "creationTime": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T10:{i % 60:02d}:00+0100",
        "status": {"id": -2 + i % 5, "name": "Vyřizuje se"},
        "email": f"customer{i % 5000}@example.com",
        "price": {"withVat": f"{price:.2f}", "vat": f"{price * 0.21:.2f}", "currencyCode": "CZK"},
        "items": [
            {"code": f"P{rng.randrange(10_000)}", "amount": str(rng.randint(1, 3)), "itemPriceWithVat": f"{price:.2f}"}
            for _ in range(1 + i % 3)
        ],
    }


class FileServer:
    """Serves one directory on 127.0.0.1 (a free port) in a thread."""

    def __init__(self, directory: Path) -> None:
        handler = partial(_QuietHandler, directory=str(directory))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


# --- the child: run only the node ----------------------------------------------------------------


async def parse_once(url: str) -> dict[str, float]:
    """Run shoptet-parse-json-lines on ``url``; lines, seconds and peak RSS of this process."""
    import httpx

    from applications.client import ShoptetClient
    from applications.premium import TOKEN_SECRET, PremiumApplication
    from nodes.connectors.parse_json_lines import ShoptetParseJsonLines
    from worker.envelope import Message
    from worker.limiter import LocalLimiter
    from worker.node import NodeContext
    from worker.settings import Settings
    from worker.store import Install

    install = Install(user="bench", application=PremiumApplication.name, secrets={TOKEN_SECRET: "bench-token"})
    baseline_mb = peak_rss_mb()
    lines = 0

    async def emit(batch: Any) -> None:
        nonlocal lines
        lines += len(batch)

    async with httpx.AsyncClient(timeout=60) as http:
        client = ShoptetClient(
            http=http, application=PremiumApplication(), install=install, limiter=LocalLimiter(), base_url=url
        )
        ctx = NodeContext(
            store=None,  # type: ignore[arg-type]  # the node never touches the store
            settings=Settings.model_validate({}),
            install=install,
            application=client.application,
            shoptet=client,
        )
        message = Message(body={"jobId": "bench", "status": "completed", "resultUrl": url})
        started = time.perf_counter()
        await ShoptetParseJsonLines().process(message, ctx, emit)
        seconds = time.perf_counter() - started
    return {"lines": lines, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "baseline_rss_mb": baseline_mb}


def peak_rss_mb() -> float:
    """Peak RSS of this process image: ``VmHWM`` where /proc has it, else ``ru_maxrss``.

    Not ``ru_maxrss`` first: Linux carries it across ``exec``, so a child started by a big parent
    would report the parent's size at fork time.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(url: str, timeout: float = 900.0) -> dict[str, float]:
    """Run :func:`parse_once` in a fresh interpreter and read its JSON answer."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.snapshot_parsing", url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"parse child failed ({done.returncode}): {done.stderr[-2000:]}")
    answer: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


async def run(lines: int | None = None) -> BenchResult:
    """``lines`` in the snapshot (BENCH_SNAPSHOT_LINES, 1,000,000)."""
    lines = lines or env_int("BENCH_SNAPSHOT_LINES", 1_000_000)
    reused = snapshot_path(lines).exists()
    generating = time.perf_counter()
    path = await asyncio.to_thread(snapshot_file, lines)
    generated_in = time.perf_counter() - generating
    made = "reused from an earlier run" if reused else f"generated in {generated_in:.1f}s"
    with FileServer(path.parent) as server:
        measured = await asyncio.to_thread(run_child, server.url(path.name))
    if int(measured["lines"]) != lines:
        raise RuntimeError(f"parsed {measured['lines']} lines, expected {lines}")
    rate = measured["lines"] / measured["seconds"]
    result = ceiling_result(NAME, measured["peak_rss_mb"], "MB peak RSS", RSS_CEILING_MB)
    result.notes += [
        f"{lines} lines ({path.stat().st_size / 1e6:.1f} MB gzipped) in {measured['seconds']:.1f}s: "
        f"{rate:,.0f} lines/s",
        f"RSS of the child before parsing (interpreter + imports): {measured['baseline_rss_mb']:.0f} MB",
        f"file {made} (cached in {path.parent}); served by a local HTTP server",
    ]
    result.details.update(lines_per_s=round(rate), seconds=round(measured["seconds"], 2))
    return result


def main() -> None:
    print(json.dumps(asyncio.run(parse_once(sys.argv[1]))))


if __name__ == "__main__":
    main()
