"""Every topology version a worker knows, kept in sync through a compacted control topic.

Records are keyed ``version:<name>:<version>`` (the source; every version stays, so a message that
started on an old version can still be routed by it) and ``current:<name>`` (which version new
starts use, and whether the topology is enabled), and ``crons-since:<name>`` (see
``Deployment.crons_since``). Workers read the topic from the beginning at
start and follow it while running: a deploy reaches every worker without a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from worker.kafka import read_from_start
from worker.registry import NodeRegistry
from worker.tasks import cancel_and_wait
from worker.topology import TopologyError, TopologyVersion, parse_topology
from worker.webhook_events import SHOPTET_WEBHOOK_EVENTS, SYSTEM_WEBHOOK_EVENTS

log = structlog.get_logger("catalog")


@dataclass(slots=True)
class Deployment:
    name: str
    version: str
    enabled: bool = True
    deployed_at: str = ""
    #: Since when the topology has run, enabled, with the cron starts it has now: a redeploy that
    #: kept them (a changed description, CI deploying every file again) or an enable of an enabled
    #: one keeps it, so that the scheduler still fires a tick missed before it (see
    #: ``Scheduler._deployed_by``). Empty: since ``deployed_at``. It travels in a record of its own
    #: (``crons-since:<name>``, tied to the pointer by ``deployed_at``): a field the pointer did not
    #: have before made workers of the build before this one drop the whole pointer.
    crons_since: str = ""

    @property
    def crons_run_since(self) -> str:
        return self.crons_since or self.deployed_at


_DEPLOYMENT_FIELDS = frozenset(f.name for f in dataclasses.fields(Deployment))


@dataclass
class TopologyCatalog:
    registry: NodeRegistry
    versions: dict[tuple[str, str], TopologyVersion] = field(default_factory=dict)
    #: Per topology, the pointer this process runs by: as deployed, unless it names a version this
    #: process cannot load (then the version it ran before, see ``apply``).
    current: dict[str, Deployment] = field(default_factory=dict)
    #: Per topology, the pointer as deployed: what the CLI shows and republishes (enable, disable),
    #: so that a CLI that cannot load a version does not roll every worker back to an older one.
    deployed: dict[str, Deployment] = field(default_factory=dict)
    history: dict[str, list[str]] = field(default_factory=dict)
    #: Every deployed version's YAML as published, also of versions this process cannot load.
    sources: dict[tuple[str, str], str] = field(default_factory=dict)
    listeners: list[Callable[[], None]] = field(default_factory=list)
    #: Per application (None: any), the events its active topologies start on.
    _events: dict[str | None, frozenset[str]] = field(default_factory=dict)
    #: Per topology, the last ``crons-since`` record: (the pointer's deployed_at, since).
    _crons_since: dict[str, tuple[str, str]] = field(default_factory=dict)

    # queries -----------------------------------------------------------------------------------
    def get(self, name: str, version: str) -> TopologyVersion | None:
        return self.versions.get((name, version))

    def active(self, name: str) -> TopologyVersion | None:
        """The version new starts of ``name`` use, or None when unknown or disabled."""
        deployment = self.current.get(name)
        if deployment is None or not deployment.enabled:
            return None
        return self.versions.get((name, deployment.version))

    def unloadable(self) -> list[str]:
        """Deployed, enabled topologies whose deployed version this process cannot load (a module
        it imports is missing here): new starts from this process run the version before it, if
        it loaded one, or none."""
        return sorted(
            name
            for name, deployment in self.deployed.items()
            if deployment.enabled and self.get(name, deployment.version) is None
        )

    def deployed_source(self, name: str, version: str | None = None) -> tuple[str, str] | None:
        """(version, YAML) of ``version``, else of the deployed pointer's: as published, also when
        this process cannot load it (``latest`` then gives the version this process runs instead)."""
        if version is None:
            deployment = self.deployed.get(name)
            if deployment is None:
                return None
            version = deployment.version
        source = self.sources.get((name, version))
        return None if source is None else (version, source)

    def latest(self, name: str) -> TopologyVersion | None:
        deployment = self.current.get(name)
        return self.versions.get((name, deployment.version)) if deployment else None

    def active_all(self) -> list[TopologyVersion]:
        return [tv for name in sorted(self.current) if (tv := self.active(name)) is not None]

    def disabled_all(self) -> list[TopologyVersion]:
        """The versions of the deployed topologies that are disabled (as this process runs them)."""
        return [
            tv
            for name, deployment in sorted(self.current.items())
            if not deployment.enabled and (tv := self.versions.get((name, deployment.version))) is not None
        ]

    def webhook_events(self, application: str | None = None) -> frozenset[str]:
        """Events the active topologies start on (of ``application``, or of none, as the ingress
        routes them) that webhooks-subscribe registers; computed once per catalog change, read per
        message.

        Only events Shoptet sends and lets the API register: a version deployed before they were
        checked may name another, a system event (``addon:*``) is set up in the Partners' addon
        administration, and Shoptet refuses a registration call with either as a whole."""
        events = self._events.get(application)
        if events is None:
            events = self._events[application] = frozenset(
                event
                for tv in self.active_all()
                if application is None or tv.topology.serves(application)
                for event in tv.topology.webhook_events()
                if event in SHOPTET_WEBHOOK_EVENTS and event not in SYSTEM_WEBHOOK_EVENTS
            )
        return events

    # applying control records ------------------------------------------------------------------
    def apply(self, key: str, value: bytes | None) -> None:
        self._events = {}
        kind, _, rest = key.partition(":")
        if value is None:
            return
        data = json.loads(value)
        if kind == "version":
            if isinstance(data.get("name"), str) and isinstance(data.get("version"), str):
                self.sources[(data["name"], data["version"])] = str(data.get("source", ""))
            try:
                origin = f"{data['name']}@{data['version']}"
                tv = parse_topology(data["source"], origin, self.registry, deployed=True)
            except TopologyError as exc:
                log.error("ignoring a deployed topology this worker cannot load", error=str(exc))
                return
            tv.version = data["version"]
            self.versions[(tv.name, tv.version)] = tv
            versions = self.history.setdefault(tv.name, [])
            if tv.version not in versions:
                versions.append(tv.version)
            deployed = self.deployed.get(tv.name)
            if deployed is not None and deployed.version == tv.version and self.current.get(tv.name) != deployed:
                # its pointer came first (a control topic of several partitions keeps no order
                # between the two records), and the version run meanwhile was the one before
                self.current[tv.name] = dataclasses.replace(deployed)
        elif kind == "current":
            # the fields this worker knows: a newer worker's pointer may carry more
            known = {k: v for k, v in data.items() if k in _DEPLOYMENT_FIELDS}
            self.deployed[rest] = Deployment(**known)
            deployment = Deployment(**known)
            running = self.current.get(rest)
            if (deployment.name, deployment.version) not in self.versions and running is not None:
                # e.g. a custom node the CLI could import and this worker cannot, or a rolling
                # upgrade: new starts keep the version this worker runs (enabled or not as the
                # pointer says) instead of stopping
                log.error(
                    "keeping the running version: this worker cannot load the deployed one",
                    topology=rest,
                    running=running.version,
                    deployed=deployment.version,
                )
                deployment.version = running.version
            self.current[rest] = deployment
            self._attach_crons_since(rest)
        elif kind == "crons-since":
            self._crons_since[rest] = (str(data.get("deployed_at", "")), str(data.get("since", "")))
            self._attach_crons_since(rest)
        for listener in self.listeners:
            try:
                listener()
            except Exception:  # the others must still see the change, and the follower read on
                log.exception("a deploy listener failed", listener=getattr(listener, "__qualname__", repr(listener)))

    def _attach_crons_since(self, name: str) -> None:
        """Give the pointers their ``crons_since`` when its record is the one written with them."""
        deployed_at, since = self._crons_since.get(name, ("", ""))
        for pointers in (self.current, self.deployed):
            deployment = pointers.get(name)
            if deployment is not None and deployed_at and deployed_at == deployment.deployed_at:
                deployment.crons_since = since

    def add_local(self, tv: TopologyVersion, enabled: bool = True, crons_since: str = "") -> None:
        """Apply a version and its pointer here and now: without a control topic (unit tests,
        `topology validate`), or for a deploy before the follower reads it back (``up``)."""
        self.apply(f"version:{tv.name}:{tv.version}", _version_record(tv))
        for key, value in _pointer_records(tv.name, tv.version, enabled, crons_since):
            self.apply(key, value)

    def crons_since(self, tv: TopologyVersion, enabled: bool) -> str:
        """``Deployment.crons_since`` for a pointer to ``tv``: the deployed pointer's, when that one
        ran enabled with the same cron starts and this one is enabled too; else none (from now)."""
        previous = self.deployed.get(tv.name)
        if previous is None or not previous.enabled or not enabled:
            return ""
        before = self.versions.get((previous.name, previous.version))
        if before is None or _cron_starts(before) != _cron_starts(tv):
            return ""
        return previous.crons_run_since


def _cron_starts(tv: TopologyVersion) -> set[tuple[str, str | None]]:
    return {(start.cron, start.to) for start in tv.topology.start if start.cron}


def _version_record(tv: TopologyVersion) -> bytes:
    return json.dumps({"name": tv.name, "version": tv.version, "source": tv.source}).encode()


def _pointer_records(name: str, version: str, enabled: bool, crons_since: str = "") -> list[tuple[str, bytes]]:
    """(key, value) of the records a pointer is written as: its ``crons-since`` first, if any (a
    worker then has it when the pointer comes), then the pointer."""
    # microseconds: a crons-since record is matched to its pointer by this, and a redeploy in the
    # same second as an enable took the enable's record for its own
    deployed_at = datetime.now(UTC).isoformat(timespec="microseconds")
    pointer = {"name": name, "version": version, "enabled": enabled, "deployed_at": deployed_at}
    records = [(f"current:{name}", json.dumps(pointer).encode())]
    if crons_since:
        since = {"deployed_at": deployed_at, "since": crons_since}
        records.insert(0, (f"crons-since:{name}", json.dumps(since).encode()))
    return records


async def _publish_pointer(producer: AIOKafkaProducer, topic: str, records: list[tuple[str, bytes]]) -> None:
    for key, value in records:
        await producer.send_and_wait(topic, value, key=key.encode())


async def publish_deployment(
    producer: AIOKafkaProducer, topic: str, tv: TopologyVersion, enabled: bool = True, crons_since: str = ""
) -> None:
    """Deploy: the version record first, then the pointer, both acknowledged before returning
    (``crons_since``: see :meth:`TopologyCatalog.crons_since`)."""
    await producer.send_and_wait(topic, _version_record(tv), key=f"version:{tv.name}:{tv.version}".encode())
    await _publish_pointer(producer, topic, _pointer_records(tv.name, tv.version, enabled, crons_since))


async def publish_enabled(producer: AIOKafkaProducer, topic: str, deployment: Deployment, enabled: bool) -> None:
    """Enable or disable; enabling an enabled one keeps the time its crons have run since."""
    crons_since = deployment.crons_run_since if deployment.enabled and enabled else ""
    await _publish_pointer(producer, topic, _pointer_records(deployment.name, deployment.version, enabled, crons_since))


class CatalogFollower:
    """Reads the control topic (no consumer group: every worker reads all of it)."""

    def __init__(self, consumer: AIOKafkaConsumer, topic: str, catalog: TopologyCatalog) -> None:
        self.consumer = consumer
        self.topic = topic
        self.catalog = catalog
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        # catch up before the worker starts consuming, so every in-flight version is known
        await read_from_start(self.consumer, self.topic, self._apply_record, default_partitions=[0])
        self._task = asyncio.create_task(self._follow(), name="catalog-follower")

    def _apply_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Apply one record; one this worker cannot apply is logged and skipped. Raised, it ended
        the poll, and the records fetched after it were never applied (the position had moved)."""
        if record.key is None:
            return
        try:
            self.catalog.apply(record.key.decode(errors="replace"), record.value)
        except Exception:
            log.exception("ignoring a control record this worker cannot apply", offset=record.offset)

    async def _poll(self, timeout_ms: int) -> None:
        batches = await self.consumer.getmany(timeout_ms=timeout_ms)
        for records in batches.values():
            for record in records:
                self._apply_record(record)

    async def _follow(self) -> None:
        while True:
            try:
                await self._poll(1000)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("control topic read failed; retrying")
                await asyncio.sleep(1)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self.consumer.stop()
