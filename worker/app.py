"""The worker process: broker, store, catalog, one consumer per node type, retries, inbound topics.

``Worker.start`` brings every part up and returns once each consumer has joined its group, which is
what readiness means. Consumers start concurrently: a group join takes seconds (about 5 s on the
embedded broker), and 20 node types one after another would take minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import structlog
from aiokafka.errors import KafkaError

from applications.http import shoptet_http_client
from worker.broker import EmbeddedBroker
from worker.catalog import CatalogFollower, TopologyCatalog, publish_deployment
from worker.consumer import ManagedConsumer, ReadAheadBudget, revoke_wait_seconds
from worker.inbound import InboundBridge, install_of
from worker.kafka import ensure_control_topic, ensure_topics, make_consumer, make_producer
from worker.limiter import Limiter, LocalLimiter
from worker.metrics import Metrics
from worker.node import Node
from worker.processes import ProcessTracker
from worker.processor import NodeProcessor
from worker.registry import NodeRegistry, default_registry
from worker.retry import RetryForwarder
from worker.runtime import Runtime
from worker.settings import Settings
from worker.store import InstallStore
from worker.tasks import stop_quietly
from worker.topics import TopicNames
from worker.topology import TopologyVersion, load_topology_dir

if TYPE_CHECKING:
    from applications.base import Application

log = structlog.get_logger("worker")

#: How long readiness waits for the broker to answer a metadata request.
BROKER_CHECK_SECONDS = 3.0
#: Records the retry consumer may hold while they wait for their due time.
RETRY_CONCURRENCY = 10_000


class UnknownNodeType(ValueError):
    """``NODES`` (or ``node_names``) names a node type no module provides."""


def _topology_files(directory: Path, registry: NodeRegistry, topics: TopicNames) -> list[TopologyVersion]:
    """The files ``up`` deploys; none when the directory is not there (topologies may all come
    through `topology deploy`), said in the log, so that a mistyped path is still seen."""
    if not directory.exists():
        log.warning("no topology files deployed: TOPOLOGY_DIR does not exist", path=str(directory.resolve()))
    return load_topology_dir(directory, registry, topics=topics, missing_ok=True)


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        store: InstallStore | None = None,
        registry: NodeRegistry | None = None,
        node_names: Iterable[str] | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry or default_registry()
        self._store = store
        self._node_names = list(node_names) if node_names is not None else None
        self._limiter = limiter
        self.broker: EmbeddedBroker | None = None
        self.runtime: Runtime | None = None
        self.consumers: list[ManagedConsumer] = []
        self.inbound: ManagedConsumer | None = None
        self.readiness_consumers: list[ManagedConsumer] = []
        #: The consumer of each node type, for a deploy that changes its limits.
        self._node_consumers: list[tuple[Node, ManagedConsumer]] = []
        #: Node types whose constructor failed here (logged once; a restart tries again).
        self._unbuildable: set[str] = set()
        self.follower: CatalogFollower | None = None
        self.tracker: ProcessTracker | None = None
        self.ready = asyncio.Event()
        #: One read-ahead byte budget for all of this process's consumers.
        self.read_ahead = ReadAheadBudget(settings.consumer_read_ahead_bytes)
        self._owned_store = store is None
        self._stopping = False
        #: Starting the inbound consumer a deploy asked for (see ``_follow_inbound``).
        self._inbound_start: asyncio.Task[None] | None = None
        #: Starting consumers of node types a deploy brought (see ``_follow_node_types``).
        self._late_starts: set[asyncio.Task[None]] = set()

    @property
    def rt(self) -> Runtime:
        assert self.runtime is not None, "worker not started"
        return self.runtime

    def node_names(self) -> list[str]:
        if self._node_names is not None:
            return self._node_names
        if self.settings.nodes:
            return [n.strip() for n in self.settings.nodes.split(",") if n.strip()]
        return self.registry.names()

    async def start(self, *, deploy: Iterable[TopologyVersion] = (), deploy_dir: Path | None = None) -> None:
        settings = self.settings
        bootstrap = settings.kafka_bootstrap_servers
        if not bootstrap:
            self.broker = EmbeddedBroker()
            bootstrap = await asyncio.to_thread(self.broker.start)
            log.warning(
                "the embedded broker keeps its topics in memory: messages in flight, deploys and the "
                "process ledger are gone when it stops, while the store keeps watermarks; set "
                "KAFKA_BOOTSTRAP_SERVERS for anything you keep"
            )
        await self._start_runtime(bootstrap)
        rt = self.rt
        producer, topics, catalog = rt.producer, rt.topics, rt.catalog
        to_deploy = list(deploy)
        if deploy_dir is not None:
            to_deploy += _topology_files(deploy_dir, self.registry, topics)
        own_topics = {topic for tv in to_deploy for topic in tv.own_topics()}
        node_topics = [topics.node(n) for n in self.registry.names()]
        runtime_topics = [topics.retry, topics.processes, topics.process_events]
        await ensure_topics(settings, bootstrap, [*node_topics, *runtime_topics, *own_topics])
        await ensure_control_topic(settings, bootstrap, topics.control)
        self.follower = CatalogFollower(
            make_consumer(settings, bootstrap, group_id=None),
            topics.control,
            catalog,
        )
        await self.follower.start()
        # before anything is deployed: the deployed custom nodes are imported now (the follower
        # read them), and the ones the files bring are imported here
        for path in {path for tv in to_deploy for path in tv.topology.imports}:
            self.registry.import_path(path)
        # now: with every deployed version's custom node types (a disabled topology's, a replaced
        # version's), whose messages in flight must still be handled after a restart
        names = self.node_names()
        imported = [topics.node(n) for n in names if topics.node(n) not in node_topics]
        if imported:
            await ensure_topics(settings, bootstrap, imported)
        unknown = [name for name in names if self.registry.get(name) is None]
        if unknown:
            listed = ", ".join(unknown)
            raise UnknownNodeType(f"NODES names unknown node type(s): {listed} (see `shoptet-worker nodes`)")
        for tv in to_deploy:
            # a version deployed before leaves the pointer to the operators: a restart must not
            # enable what they disabled, or roll back what they deployed since from elsewhere
            if (tv.name, tv.version) not in catalog.versions:
                # a changed file (a new image) is deployed, and what operators disabled stays so
                current = catalog.current.get(tv.name)
                enabled = current.enabled if current is not None else True
                crons_since = catalog.crons_since(tv, enabled)
                await publish_deployment(producer, topics.control, tv, enabled, crons_since)
                # the follower reads it back as well; new starts need it now
                catalog.add_local(tv, enabled, crons_since)
        self._build_consumers(names, bootstrap)
        self.tracker = ProcessTracker(
            make_consumer(settings, bootstrap, group_id=topics.group("process-tracker")),
            rt.outputs,
            topics.processes,
            topics.process_events,
        )
        await asyncio.gather(self.tracker.start(), *(c.start() for c in self.consumers))
        #: What start and readiness wait for: an inbound consumer a deploy starts later joins its
        #: group on its own, without holding up the start or the worker's HTTP endpoints.
        self.readiness_consumers = list(self.consumers)
        catalog.listeners.append(self._follow_inbound)
        catalog.listeners.append(self._follow_node_limits)
        catalog.listeners.append(self._follow_node_types)
        self._follow_node_limits()  # a deploy the follower applied while the consumers were starting
        self._follow_inbound()  # a deploy the follower applied while the consumers were starting
        self._follow_node_types()
        await asyncio.gather(self.tracker.assigned.wait(), *(c.wait_assigned() for c in self.readiness_consumers))
        tune_garbage_collector()
        self.ready.set()
        log.info("worker ready", nodes=len(names), bootstrap_servers=bootstrap)

    async def _start_runtime(self, bootstrap: str) -> Runtime:
        """What every process that talks to the pipeline needs: store, HTTP, producer, catalog."""
        settings = self.settings
        store = self._store or await open_configured_store(settings)
        http = shoptet_http_client(settings)
        producer = make_producer(settings, bootstrap)
        await producer.start()
        metrics = Metrics()
        self.runtime = Runtime(
            settings=settings,
            store=store,
            registry=self.registry,
            catalog=TopologyCatalog(self.registry),
            producer=producer,
            http=http,
            applications=configured_applications(settings, store, http),
            limiter=self._limiter or build_limiter(settings, metrics),
            topics=TopicNames(settings.kafka_topic_prefix),
            bootstrap_servers=bootstrap,
            metrics=metrics,
        )
        metrics.watch_lag(self._lag)
        return self.runtime

    def _build_consumers(self, names: list[str], bootstrap: str) -> None:
        rt = self.rt
        budget = self.read_ahead
        for name in names:
            self._node_consumer(name)
        forwarder = RetryForwarder(rt)
        self.consumers.append(
            ManagedConsumer(
                "retry",
                make_consumer(self.settings, bootstrap, group_id=rt.topics.group("retry")),
                [rt.topics.retry],
                forwarder.handle,
                concurrency=RETRY_CONCURRENCY,
                max_in_flight=RETRY_CONCURRENCY,
                budget=budget,
                abandon_on_revoke=True,
                # the waiting records are cancelled at once; this bounds the forwards under way,
                # which a revocation must see acknowledged and committed (see RetryForwarder._send)
                revoke_wait=revoke_wait_seconds(self.settings),
            )
        )
        inbound_topics = InboundBridge(rt).topics()
        if inbound_topics:
            self.inbound = self._inbound_consumer(inbound_topics)
            self.consumers.append(self.inbound)

    def _node_consumer(self, name: str) -> ManagedConsumer | None:
        """The consumer of one node type's topic (added to ``consumers``; not started)."""
        rt = self.rt
        cls = self.registry.get(name)
        if cls is None:
            raise ValueError(f"unknown node type {name!r}")
        try:
            node = cls()
        except Exception:  # a custom node's (a setting it reads missing): the other types run on
            log.exception("node type cannot be built; its messages wait until a worker can", node=name)
            self._unbuildable.add(name)
            return None
        processor = NodeProcessor(rt, node)
        concurrency, ordered = node_limits(node, rt.catalog.active_all())
        consumer = ManagedConsumer(
            name,
            make_consumer(self.settings, rt.bootstrap_servers, group_id=rt.topics.group(name)),
            [rt.topics.node(name)],
            processor.handle,
            concurrency=concurrency,
            ordered=ordered,
            max_in_flight=self.settings.consumer_read_ahead_records,
            budget=self.read_ahead,
            revoke_wait=revoke_wait_seconds(self.settings),
        )
        processor.feed = consumer
        self.consumers.append(consumer)
        self._node_consumers.append((node, consumer))
        return consumer

    def _follow_node_types(self) -> None:
        """Catalog listener: consume the node types a deploy brought (a custom node's module, first
        imported by the deploy), so that its processes run without a restart.

        Only in a worker that consumes every node type: one given ``NODES`` keeps to its list.
        """
        if self._stopping or self._node_names is not None or self.settings.nodes:
            return
        consumed = {node.name for node, _ in self._node_consumers} | self._unbuildable
        # every loaded version, not only the running ones: a disabled or replaced version's messages
        # in flight still need its node types
        for tv in list(self.rt.catalog.versions.values()):
            for name in sorted(tv.topology.node_types() - consumed):
                if self.registry.get(name) is None:
                    continue  # not importable here: the catalog logged it when it read the deploy
                consumer = self._node_consumer(name)
                consumed.add(name)
                if consumer is None:
                    continue
                task = asyncio.get_running_loop().create_task(self._start_node_consumer(consumer))
                self._late_starts.add(task)
                task.add_done_callback(self._late_starts.discard)

    async def _start_node_consumer(self, consumer: ManagedConsumer) -> None:
        try:
            await ensure_topics(self.settings, self.rt.bootstrap_servers, list(consumer.topics))
            await consumer.start()
        except Exception:  # the worker runs on; a restart consumes it
            log.exception("consumer of a newly deployed node type did not start", node=consumer.name)
            with contextlib.suppress(Exception):
                await consumer.consumer.stop()  # its connections, which a failed start may hold
            self.consumers.remove(consumer)
            self._node_consumers = [(n, c) for n, c in self._node_consumers if c is not consumer]
        else:
            log.info("consuming a newly deployed node type", node=consumer.name)

    def _inbound_consumer(self, topics: list[str]) -> ManagedConsumer:
        rt = self.rt
        bridge = InboundBridge(rt)
        bridge.feed = consumer = ManagedConsumer(
            "inbound",
            make_consumer(self.settings, rt.bootstrap_servers, group_id=rt.topics.group("inbound")),
            topics,
            bridge.handle,
            # one record of an install at a time: a start whose send was retried let the next
            # record's start go first, and an ordered node (stock, order status) then applied the
            # ERP's older word last
            ordered=True,
            queue_key=install_of,
            budget=self.read_ahead,
            revoke_wait=revoke_wait_seconds(self.settings),
        )
        return consumer

    def _lag(self) -> list[tuple[str, int]]:
        return [(c.name, sum(c.lag().values())) for c in self.consumers]

    def _follow_node_limits(self) -> None:
        """Catalog listener: a deploy that changes a node's ``concurrency`` or ``ordered`` applies it
        to the running consumer, without a restart."""
        active = self.rt.catalog.active_all()
        for node, consumer in self._node_consumers:
            concurrency, ordered = node_limits(node, active)
            if (concurrency, ordered) != (consumer.concurrency, consumer.ordered):
                log.info("node limits changed by a deploy", node=node.name, concurrency=concurrency, ordered=ordered)
                consumer.configure(concurrency=concurrency, ordered=ordered)

    def _follow_inbound(self) -> None:
        """Catalog listener: consume the inbound topics of the active topologies.

        The first deploy with a ``topic:`` start starts the inbound consumer, so that a worker that
        started without one needs no restart. A deploy that drops every inbound start leaves the
        consumer on its topics: records that come meanwhile go to trash for a later replay.
        """
        topics = InboundBridge(self.rt).topics()
        if not topics or self._stopping:
            return
        if self.inbound is None:
            self.inbound = self._inbound_consumer(topics)
            self.consumers.append(self.inbound)
            self._inbound_start = asyncio.get_running_loop().create_task(self._start_inbound(self.inbound))
        elif topics != self.inbound.topics:
            self.inbound.resubscribe(topics)

    async def _start_inbound(self, consumer: ManagedConsumer) -> None:
        try:
            await consumer.start()
        except Exception:  # the worker runs on; the next deploy (or a restart) tries again
            log.exception("inbound consumer did not start", topics=consumer.topics)
            self.consumers.remove(consumer)
            self.inbound = None
        else:
            log.info("inbound consumer started", topics=consumer.topics)

    async def broker_answers(self, timeout: float = BROKER_CHECK_SECONDS) -> bool:
        """Whether the broker answers a metadata request now (readiness: an instance whose broker is
        gone can only answer webhooks and runs with 503, so the load balancer should skip it)."""
        if self.runtime is None:
            return False
        try:
            async with asyncio.timeout(timeout):
                return bool(await self.runtime.producer.client.force_metadata_update())
        except (TimeoutError, KafkaError, OSError):
            return False

    def problems(self) -> list[str]:
        """What stopped this worker from working for good, so that only a restart helps: a consumer
        loop that ended (nothing more is read from its topics), or an embedded broker that exited.
        Empty while it works (a broker outage it retries through is not one of these)."""
        found = [f"consumer {c.name}: {c.failure}" for c in self.consumers if c.failure is not None]
        code = self.broker.exited() if self.broker is not None and not self._stopping else None
        if code is not None:
            found.append(f"the embedded broker exited (code {code})")
        return found

    async def stop(self) -> None:
        self._stopping = True
        if self._inbound_start is not None:  # one a deploy started: let it finish before it stops
            await asyncio.gather(self._inbound_start, return_exceptions=True)
        await asyncio.gather(*self._late_starts, return_exceptions=True)
        timeout = self.settings.graceful_timeout_seconds
        await asyncio.gather(*(c.stop(timeout) for c in self.consumers), return_exceptions=True)
        if self.tracker is not None:
            await stop_quietly(self.tracker.stop(), "the process tracker")
        if self.follower is not None:
            await stop_quietly(self.follower.stop(), "the catalog follower")
        if self.runtime is not None:
            await self.runtime.ledger.close()
            await self.runtime.outputs.close()
            # work that outlived its request (webhook hand-overs, a start record sent again) while
            # the producer still sends: after its stop, a resend in backoff could never go out
            await self.runtime.finished(timeout)
            with contextlib.suppress(Exception):  # bounded: a broker that is gone must not hang the exit
                await asyncio.wait_for(self.runtime.producer.stop(), timeout)
            await self.runtime.http.aclose()
            close = getattr(self.runtime.limiter, "close", None)
            if close is not None and self._limiter is None:
                with contextlib.suppress(Exception):
                    await close()  # frees slots held in Redis now rather than after their TTL
            if self._owned_store:
                await self.runtime.store.close()
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)
        log.info("worker stopped")


#: Allocations between young-generation collections (CPython's default is 700).
GC_THRESHOLDS = (10_000, 10, 10)


def tune_garbage_collector() -> None:
    """Keep the cyclic garbage collector from eating the throughput.

    A worker holds many live objects (records read ahead, their headers, tasks), and with
    CPython's defaults the full collections that walk all of them took about a quarter of the
    hop benchmark's time. Objects alive once the worker is up (modules, settings, clients) are
    frozen out of collection, and collections run less often. Garbage without cycles is freed
    by reference counting as before.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def open_configured_store(settings: Settings) -> InstallStore:
    from worker.store import open_store

    return await open_store(settings)


def node_limits(node: Node, active: Iterable[TopologyVersion]) -> tuple[int, bool]:
    """A node type's concurrency and ordering, as the ``active`` topologies ask: one consumer serves
    the type in every topology, so it runs with the highest concurrency any of them asks, and one
    record per install at a time when any asks ``ordered``. A topology that does not say asks the
    node's own default: another topology's ``ordered: false`` must not unorder a writer it uses."""
    specs = [spec for tv in active for spec in tv.topology.nodes.values() if spec.node == node.name]
    if not specs:
        return node.concurrency, node.ordered
    concurrency = max(s.concurrency or node.concurrency for s in specs)
    ordered = any(node.ordered if s.ordered is None else s.ordered for s in specs)
    return concurrency, ordered


def configured_applications(
    settings: Settings, store: InstallStore, http: httpx.AsyncClient
) -> Mapping[str, Application]:
    from applications.registry import build_applications

    return build_applications(settings, store, http)


def build_limiter(settings: Settings, metrics: Metrics | None = None) -> Limiter:
    on_wait = metrics.limiter_waited if metrics is not None else None
    if settings.redis_url:
        from worker.redis_limiter import RedisLimiter

        return RedisLimiter.from_url(
            settings.redis_url,
            per_token=settings.shoptet_max_connections_per_token,
            per_host=settings.shoptet_max_connections_per_host,
            prefix=settings.redis_limiter_prefix,
            on_wait=on_wait,
        )
    return LocalLimiter(
        settings.shoptet_max_connections_per_token, settings.shoptet_max_connections_per_host, on_wait=on_wait
    )
