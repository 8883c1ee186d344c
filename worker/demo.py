"""``make run``'s first experience: a seeded simulated shop (or your real one), an order import
with a progress bar, and directions for what to look at next.

Without ``SHOPTET_PRIVATE_API_TOKEN`` the simulator plays Shoptet; with it, the same steps run
against api.myshoptet.com for that shop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from worker.settings import Settings

if TYPE_CHECKING:
    from simulator.server import SimulatorServer
    from worker.app import Worker

log = structlog.get_logger("demo")

DEMO_USER = "demo-shop"
ORDERS_SINK = "shoptet.orders"


class DemoEnvironment:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.simulator: SimulatorServer | None = None
        self.console = Console(stderr=True)

    @property
    def simulated(self) -> bool:
        return self.settings.shoptet_private_api_token is None

    async def start(self) -> Settings:
        """Start the simulator when no real shop is configured; return the settings to run with.

        On the embedded broker, a run starts from a fresh store. The broker keeps its topics in
        memory, and a watermark kept from an earlier run skipped, for good, the orders that were
        still on their way when it stopped (listed, not fetched yet); the simulator is new each run
        too, and the last run's watermark hid its orders."""
        if not self.simulated:
            if self.settings.kafka_bootstrap_servers:
                return self.settings
            return self.settings.model_copy(update={"database_url": _fresh_store("var/demo-shop.sqlite3")})
        from simulator.config import SimulatorConfig
        from simulator.server import SimulatorServer

        config = SimulatorConfig(orders=self.settings.demo_orders, products=50, latency_ms=5)
        self.simulator = SimulatorServer(config)
        await asyncio.to_thread(self.simulator.start)
        log.info("simulated Shoptet is up", url=self.simulator.url, orders=self.settings.demo_orders)
        return self.settings.model_copy(
            update={
                "shoptet_api_url": self.simulator.url,
                "shoptet_oauth_server_url": self.simulator.url,
                "shoptet_oauth_client_id": config.oauth_client_id,
                "database_url": _fresh_store("var/demo.sqlite3"),
            }
        )

    async def run(self, worker: Worker, stop: asyncio.Event) -> None:
        from applications.installs import install_premium

        rt = worker.rt
        token = (
            self.simulator.premium_token(0)
            if self.simulator is not None
            else self.settings.shoptet_private_api_token.get_secret_value()  # type: ignore[union-attr]
        )
        install = await install_premium(
            rt.store, rt.http, api_url=rt.settings.shoptet_api_url, user=DEMO_USER, token=token
        )
        expected = self.settings.demo_orders if self.simulator is not None else None
        from worker.starter import run_manual

        started = time.monotonic()
        message = await run_manual(rt, "order-import", user=install.user, body={})
        count = await self._follow(worker, message.process_id, expected, stop)
        elapsed = time.monotonic() - started
        self._directions(worker, count, elapsed)

    async def _follow(self, worker: Worker, root: str, expected: int | None, stop: asyncio.Event) -> int:
        """Count orders reaching the sink until the process-finished event for ``root`` arrives."""
        rt = worker.rt
        consumer = AIOKafkaConsumer(
            ORDERS_SINK,
            rt.topics.process_events,
            bootstrap_servers=rt.bootstrap_servers,
            group_id=None,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        codes: set[str] = set()
        progress = Progress(
            TextColumn("order-import"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=self.console
        )
        task = progress.add_task("orders", total=expected)
        try:
            with progress:
                while not stop.is_set():
                    batches = await consumer.getmany(timeout_ms=500)
                    finished = False
                    for records in batches.values():
                        for r in records:
                            body = json.loads(r.value or b"null")
                            if r.topic == ORDERS_SINK and isinstance(body, dict):
                                codes.add(str(body.get("code")))
                            elif isinstance(body, dict) and body.get("root") == root:
                                finished = True
                    progress.update(task, completed=len(codes))
                    if finished:
                        break
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
        return len(codes)

    def _directions(self, worker: Worker, count: int, elapsed: float) -> None:
        s = worker.rt.settings
        base = f"http://{s.http_host}:{s.http_port}"
        shop = "the simulated shop" if self.simulator is not None else "your shop"
        # this run's own store (a fresh one on the embedded broker), not the configured one
        store = f"DATABASE_URL={s.database_url} " if s.database_url != self.settings.database_url else ""
        self.console.print(
            f"""
[bold green]{count} orders[/] of {shop} reached topic [bold]{ORDERS_SINK}[/] in {elapsed:.1f} s.

Where to look next:
  Kafka        {worker.rt.bootstrap_servers}  topics: {ORDERS_SINK}, {worker.rt.topics.process_events}
  HTTP         {base}/readyz  {base}/metrics  {base}/asyncapi.json
  Status       .venv/bin/shoptet-worker status
  Trash        {store}.venv/bin/shoptet-worker trash list
  Installs     {store}.venv/bin/shoptet-worker install list
  Processes    .venv/bin/shoptet-worker topology list   (deployed from ./topology)
  Run again    {store}.venv/bin/shoptet-worker run order-import --user {DEMO_USER}
  Your shop    SHOPTET_PRIVATE_API_TOKEN=... make run   (or see README: addon install)

The worker keeps serving webhooks and cron starts until Ctrl-C."""
        )

    async def stop(self) -> None:
        if self.simulator is not None:
            await asyncio.to_thread(self.simulator.stop)


def _fresh_store(path: str) -> str:
    """The URL of an empty SQLite store at ``path`` (an earlier run's file removed)."""
    for stale in (path, f"{path}-wal", f"{path}-shm"):
        Path(stale).unlink(missing_ok=True)
    return f"sqlite:///{path}"
