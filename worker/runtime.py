"""What every part of a running worker shares: settings, store, producer, catalog, applications."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import structlog
from aiokafka import AIOKafkaProducer

from worker.catalog import TopologyCatalog
from worker.envelope import Message
from worker.errors import StopError
from worker.kafka import send_message
from worker.ledger import LedgerWriter
from worker.limiter import Limiter
from worker.record_batches import RecordBatcher
from worker.registry import NodeRegistry
from worker.router import Outgoing
from worker.settings import Settings
from worker.store import Install, InstallStore
from worker.store.cache import InstallCache
from worker.tasks import background_task
from worker.topics import TopicNames

if TYPE_CHECKING:
    from applications.base import Application
    from applications.client import ShoptetClient
    from worker.metrics import Metrics

log = structlog.get_logger("runtime")


@dataclass
class Runtime:
    settings: Settings
    store: InstallStore
    registry: NodeRegistry
    catalog: TopologyCatalog
    producer: AIOKafkaProducer
    http: httpx.AsyncClient
    applications: Mapping[str, Application]
    limiter: Limiter
    topics: TopicNames
    bootstrap_servers: str
    metrics: Metrics | None = None
    installs: InstallCache = field(init=False)
    ledger: LedgerWriter = field(init=False)
    #: Node outputs go out in whole record batches (see :mod:`worker.record_batches`).
    outputs: RecordBatcher = field(init=False)
    #: Work that outlives its request and must end before the store closes (see ``finish_later``).
    finishing: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.installs = InstallCache(self.store)
        self.outputs = RecordBatcher(self.producer)
        self.ledger = LedgerWriter(self.producer, self.topics.processes, self.send_output)

    def finish_later(self, work: Coroutine[Any, Any, None], what: str | None = None) -> None:
        """Run ``work`` in the background (in no message's context); a stop waits for it after the
        producer's flush and before the store closes, and names ``what`` if it did not end."""
        task = background_task(work, name=what)
        self.finishing.add(task)
        task.add_done_callback(self.finishing.discard)

    async def finished(self, timeout: float) -> None:
        if self.finishing:
            _, unfinished = await asyncio.wait(set(self.finishing), timeout=timeout)
            for task in unfinished:  # an operator's only trace of it (a process start, say)
                log.error("stopped before background work ended", work=task.get_name())

    async def send(self, topic: str, message: Message) -> asyncio.Future[Any]:
        return await send_message(self.producer, topic, message)

    async def send_output(self, out: Outgoing) -> asyncio.Future[Any]:
        message = out.message
        return await self.outputs.send(
            out.topic, message.encode_body(), message.key(), message.kafka_headers(), measure_whole=out.measure_whole
        )

    def shoptet_client(self, install: Install) -> ShoptetClient:
        """A client for one install's Shoptet calls, sharing the process's pool and limiter."""
        from applications.client import ShoptetClient

        application = self.applications.get(install.application)
        if application is None:
            raise StopError(f"unknown application {install.application!r}")
        return ShoptetClient(
            http=self.http,
            application=application,
            install=install,
            limiter=self.limiter,
            base_url=self.settings.shoptet_api_url,
            on_response=self.metrics.shoptet_response if self.metrics is not None else None,
        )
