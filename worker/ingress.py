"""``shoptet-worker ingress``: the HTTP app alone, for running webhook ingress apart from the workers.

An ingress process only publishes starts: it needs the producer, the topology catalog (to know
who listens to an event) and the install store, but no node consumer and no retry consumer, so
scaling ingress replicas never rebalances the workers' consumer groups. It needs an external
broker (``KAFKA_BOOTSTRAP_SERVERS``): an embedded one would be private to this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterable
from pathlib import Path

import structlog
import uvicorn

from worker.app import Worker
from worker.catalog import CatalogFollower
from worker.control import NoKafka
from worker.http.app import create_http_app
from worker.kafka import ensure_control_topic, make_consumer
from worker.serve import bind_http
from worker.settings import Settings
from worker.topology import TopologyVersion

log = structlog.get_logger("ingress")


class IngressWorker(Worker):
    """A :class:`Worker` with a runtime and a catalog follower but no consumers.

    ``stop`` is the Worker's: with no consumers it stops the follower, producer, HTTP client and store.
    """

    async def start(self, *, deploy: Iterable[TopologyVersion] = (), deploy_dir: Path | None = None) -> None:
        settings = self.settings
        if not settings.kafka_bootstrap_servers:
            raise NoKafka("the standalone ingress needs KAFKA_BOOTSTRAP_SERVERS (the workers' broker)")
        if list(deploy) or deploy_dir is not None:
            raise ValueError("the ingress does not deploy topologies; it follows what the workers deployed")
        rt = await self._start_runtime(settings.kafka_bootstrap_servers)
        # before it is read: a read of a topic that does not exist yet made the broker create it as
        # it creates any (several partitions, not compacted), and deploys then went out of order
        await ensure_control_topic(settings, rt.bootstrap_servers, rt.topics.control)
        consumer = make_consumer(settings, rt.bootstrap_servers, group_id=None)
        self.follower = CatalogFollower(consumer, rt.topics.control, rt.catalog)
        await self.follower.start()
        self.ready.set()
        log.info("ingress ready", bootstrap_servers=rt.bootstrap_servers, topologies=len(rt.catalog.active_all()))


async def serve_ingress(settings: Settings) -> None:
    """Serve webhooks, manual runs, health and metrics on ``HTTP_HOST:HTTP_PORT`` until SIGINT/SIGTERM."""
    sock = bind_http(settings)  # a port in use is said before anything starts, as `up` says it
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker = IngressWorker(settings, node_names=[])
    server: uvicorn.Server | None = None
    server_task: asyncio.Task[None] | None = None
    try:
        await worker.start()
        config = uvicorn.Config(
            create_http_app(worker),
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
            log_config=None,
        )
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
        server_task = asyncio.create_task(server.serve(sockets=[sock]))
        log.info("ingress serving", url=f"http://{settings.http_host}:{settings.http_port}")
        await stop.wait()
    finally:
        if server is not None and server_task is not None:
            # let in-flight webhooks finish: their answer waits for the broker's acknowledgement
            server.should_exit = True
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(server_task, settings.graceful_timeout_seconds)
        await worker.stop()
        sock.close()
