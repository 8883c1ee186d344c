"""The AsyncAPI 3.0 document of every topic and message the worker reads or writes.

Why hand-built and not FastStream's generator: FastStream documents the handlers of its own broker
and has no place for Kafka message headers, yet in this worker the headers (Orchesty's names) are
the contract: routing, retries and the ledger all live there. It also cannot say that a key is the
install's ``user`` on node topics but the root process id on the ledger. So the document is
assembled here from the real sources: the node registry, :class:`~worker.topics.TopicNames`,
:class:`~worker.envelope.H` and the topologies, with pydantic models for the record payloads. A
node, topic or header added to the code therefore shows up in the document without editing it.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from worker.envelope import REQUIRED_HEADERS, H
from worker.registry import NodeRegistry
from worker.settings import Settings
from worker.topics import TopicNames
from worker.topology import TopologyVersion, load_topology_dir

if TYPE_CHECKING:
    from worker.app import Worker

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"

#: What each header means. Keyed by the wire name so that a header added to ``H`` without a line
#: here fails ``tests/operators/test_asyncapi.py`` instead of going undocumented.
HEADER_DOCS: dict[str, str] = {
    H.CORRELATION_ID: "Id shared by every message of one process tree (Orchesty's correlation-id).",
    H.PROCESS_ID: "Id of this process; a batch item gets a new one whose parent is the batch.",
    H.PARENT_ID: "process-id of the batch that emitted this item; empty for a start.",
    H.SEQUENCE_ID: "Hop number within the process, 0 at the start node.",
    H.TOPOLOGY_ID: "`<topology-name>@<topology-version>`.",
    H.TOPOLOGY_NAME: "Topology the message belongs to.",
    H.TOPOLOGY_VERSION: "Topology version the process started on; routing always uses this version.",
    H.NODE_ID: "Id of the node (within the topology) that must handle this message.",
    H.NODE_NAME: "Node type (or sink topic) of `node-id`.",
    H.PREVIOUS_NODE_ID: "Node id that produced this message.",
    H.USER: "The install (e-shop) the message is for; also the Kafka key.",
    H.APPLICATION: "Application that authorises Shoptet calls: `shoptet-premium` or `shoptet`.",
    H.CURSOR: "JSON object: a batch's paging state when the batch calls itself for the next page.",
    H.REPEAT_INTERVAL: "Seconds before a retry (Orchesty's repeat-interval).",
    H.REPEAT_MAX_HOPS: "Retries allowed before the message goes to trash.",
    H.REPEAT_HOPS: "Retries done so far.",
    H.RESULT_CODE: "Orchesty result code of the hop that produced this message (e.g. 1010 cursor with items).",
    H.RESULT_MESSAGE: "Human-readable result or error of that hop.",
    H.ROOT_PROCESS_ID: "process-id of the start; batch items keep it, so the ledger follows the whole process.",
    H.RETRY_TARGET_TOPIC: "Retry topic only: node topic the message goes back to when due.",
    H.RETRY_DUE_AT: "Retry topic only: unix time (seconds) when the message is due.",
}

_RETRY_ONLY = (H.RETRY_TARGET_TOPIC, H.RETRY_DUE_AT)


# --- payload models (what the worker writes besides node bodies) --------------------------------


class LedgerStart(BaseModel):
    """A process started (written by the starter next to the first node message)."""

    kind: Literal["start"]
    root: str = Field(description="root-process-id; also the Kafka key")
    topology: str
    version: str
    user: str
    at: float = Field(description="unix time")


class LedgerHandled(BaseModel):
    """Messages handled by one worker within a few milliseconds, summed per process (one row each).

    One record per ledger partition per batch; a row's process belongs to that partition. Written
    with the batch's node outputs, and the inputs are committed only when both are acknowledged.
    A batch node's items are counted as it emits them (rows with ``handled`` 0 and ``emitted`` 1),
    not only when its hop ends, where its own message is counted.
    """

    kind: Literal["handled"]
    at: float = Field(description="unix time")
    columns: list[str] = Field(
        description="names of the row values: root, topology, version, user, handled, node_outputs "
        "(messages published to node topics: followers, cursors, retries), sink_outputs, emitted "
        "(items a batch emitted), retries, trashed, done (branches that ended)"
    )
    rows: list[list[str | int]] = Field(description="one row per process, values in `columns` order")


class LedgerFinished(BaseModel):
    """Marker of an announced process, so a tracker replaying the ledger does not announce it again."""

    kind: Literal["finished"]
    root: str
    at: float


class ProcessFinished(BaseModel):
    """A process has nothing in flight and stayed quiet: its final counts."""

    event: Literal["process finished"]
    root: str
    topology: str
    version: str
    user: str
    started_at: float
    updated_at: float
    finished_at: float
    starts: int
    handled: int
    node_outputs: int
    emitted: int
    done: int
    retries: int
    trashed: int
    delivered: int
    in_flight: int
    failed: bool = Field(description="messages of it went to trash (`shoptet-worker trash list`)")


class TopologyVersionRecord(BaseModel):
    """Key `version:<name>:<version>`: one deployed topology version, kept forever (compacted)."""

    name: str
    version: str = Field(description="hash of the source")
    source: str = Field(description="the topology YAML")


class TopologyPointerRecord(BaseModel):
    """Key `current:<name>`: the version new starts use, and whether the topology is enabled."""

    name: str
    version: str
    enabled: bool
    deployed_at: str = Field(description="ISO 8601")


class TopologyCronsSinceRecord(BaseModel):
    """Key `crons-since:<name>`, written just before a pointer whose topology kept its cron starts
    (enabled): since when they have run, so that ticks missed before the pointer still fire."""

    deployed_at: str = Field(description="ISO 8601: the `deployed_at` of the pointer it goes with")
    since: str = Field(description="ISO 8601")


# --- schema helpers ---------------------------------------------------------------------------------


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def headers_schema(required: Iterable[str], *, retry: bool = False) -> dict[str, Any]:
    """Node-message headers: every Orchesty header, the retry bookkeeping only on the retry topic."""
    names = [n for n in HEADER_DOCS if retry or n not in _RETRY_ONLY]
    return {
        "type": "object",
        "properties": {n: _string(HEADER_DOCS[n]) for n in names},
        "required": list(required),
    }


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    return schema


def _key(description: str) -> dict[str, Any]:
    return {"kafka": {"key": _string(description), "bindingVersion": KAFKA_BINDING_VERSION}}


def _doc_of(cls: type) -> str:
    """The node module's summary (it says what goes in and out) plus the class docstring."""
    module = sys.modules.get(cls.__module__)
    parts = [inspect.getdoc(module) if module else None, inspect.getdoc(cls)]
    return "\n\n".join(p for p in parts if p)


# --- the document -----------------------------------------------------------------------------------


class _Doc:
    """Accumulates channels, operations and messages; keeps ids unique and references valid."""

    def __init__(self, prefix: str, partitions: int) -> None:
        self.topics = TopicNames(prefix)
        self.partitions = partitions
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        self.schemas: dict[str, Any] = {
            "NodeHeaders": headers_schema(REQUIRED_HEADERS),
            "RetryHeaders": headers_schema((*REQUIRED_HEADERS, *_RETRY_ONLY), retry=True),
            "AnyJson": {"description": "Any JSON value."},
        }

    def message(self, message_id: str, **fields: Any) -> str:
        self.messages[message_id] = {"name": message_id, "contentType": "application/json", **fields}
        return message_id

    def channel(
        self,
        channel_id: str,
        topic: str,
        description: str,
        messages: list[str],
        actions: Iterable[Literal["send", "receive"]],
        *,
        compacted: bool = False,
        managed: bool = True,
    ) -> None:
        binding: dict[str, Any] = {"topic": topic, "bindingVersion": KAFKA_BINDING_VERSION}
        if managed:  # topics the worker creates itself use its partition setting
            binding["partitions"] = self.partitions
        if compacted:
            binding["topicConfiguration"] = {"cleanup.policy": ["compact"]}
        self.channels[channel_id] = {
            "address": topic,
            "description": description,
            "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in messages},
            "bindings": {"kafka": binding},
        }
        for action in actions:
            self.operations[f"{action}.{channel_id}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "messages": [{"$ref": f"#/channels/{channel_id}/messages/{m}"} for m in messages],
            }

    def node_message(self, message_id: str, title: str, description: str, payload: dict[str, Any]) -> str:
        return self.message(
            message_id,
            title=title,
            description=description,
            headers={"$ref": "#/components/schemas/NodeHeaders"},
            payload=payload,
            correlationId={"location": f"$message.header#/{H.CORRELATION_ID}"},
            bindings=_key("user: the install, so one e-shop's messages stay in one partition"),
        )

    def model_message(self, message_id: str, model: type[BaseModel], key: str, headers: dict[str, Any]) -> str:
        self.schemas[model.__name__] = _model_schema(model)
        return self.message(
            message_id,
            title=model.__name__,
            description=inspect.getdoc(model) or "",
            headers=headers,
            payload={"$ref": f"#/components/schemas/{model.__name__}"},
            bindings=_key(key),
        )


_NO_HEADERS: dict[str, Any] = {"type": "object", "description": "No headers are set.", "properties": {}}


def build_asyncapi(settings: Settings, registry: NodeRegistry, topologies: Iterable[TopologyVersion]) -> dict[str, Any]:
    """The document for one deployment: its topic prefix, its node types, the given topologies."""
    doc = _Doc(settings.kafka_topic_prefix, settings.kafka_partitions)
    t = doc.topics
    tvs = sorted(topologies, key=lambda tv: tv.name)

    for name, cls in registry.items():
        message = doc.node_message(
            f"node.{name}", f"{name} input ({cls.kind.value})", _doc_of(cls), {"$ref": "#/components/schemas/AnyJson"}
        )
        description = (
            f"Input of node type `{name}` ({cls.kind.value}); consumer group `{t.group(name)}`. "
            "Followers, batch cursors and due retries are published here."
        )
        doc.channel(f"node.{name}", t.node(name), description, [message], ("send", "receive"))

    retry = doc.message(
        "retry",
        title="Delayed retry",
        description="A failed node message waiting for its due time, then republished to its node topic.",
        headers={"$ref": "#/components/schemas/RetryHeaders"},
        payload={"$ref": "#/components/schemas/AnyJson"},
        correlationId={"location": f"$message.header#/{H.CORRELATION_ID}"},
        bindings=_key("user (kept from the failed message)"),
    )
    doc.channel(
        "retry", t.retry, "Retryable failures wait here without blocking their partition.", [retry], ("send", "receive")
    )

    control_key = "`version:<name>:<version>`, `current:<name>` or `crons-since:<name>`"
    doc.channel(
        "control",
        t.control,
        "Compacted: every deployed topology version and the current pointer; every worker reads all of it.",
        [
            doc.model_message("control.version", TopologyVersionRecord, control_key, _NO_HEADERS),
            doc.model_message("control.current", TopologyPointerRecord, control_key, _NO_HEADERS),
            doc.model_message("control.crons-since", TopologyCronsSinceRecord, control_key, _NO_HEADERS),
        ],
        ("send", "receive"),
        compacted=True,
    )

    ledger_key = "root-process-id: one partition holds a process's whole story"
    doc.channel(
        "processes",
        t.processes,
        "The process ledger: one record per start, and handled messages summed per process in batches; "
        "`shoptet-worker status` reads it.",
        [
            doc.model_message("processes.start", LedgerStart, ledger_key, _NO_HEADERS),
            doc.model_message("processes.handled", LedgerHandled, ledger_key, _NO_HEADERS),
            doc.model_message("processes.finished", LedgerFinished, ledger_key, _NO_HEADERS),
        ],
        ("send", "receive"),
    )
    doc.channel(
        "process-events",
        t.process_events,
        "`process finished` events with the final counts, for other systems to consume.",
        [doc.model_message("process-events.finished", ProcessFinished, "root-process-id", _NO_HEADERS)],
        ("send",),
    )

    _sinks(doc, tvs)
    _inbound(doc, tvs)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "shoptet-worker",
            "version": "0.1.0",
            "description": "Kafka topics and messages of the Orchesty-style Shoptet worker. "
            f"Topologies: {', '.join(f'{tv.name}@{tv.version}' for tv in tvs) or 'none'}.",
        },
        "defaultContentType": "application/json",
        "servers": _servers(settings),
        "channels": doc.channels,
        "operations": doc.operations,
        "components": {"messages": doc.messages, "schemas": doc.schemas},
    }


def worker_asyncapi(worker: Worker) -> dict[str, Any]:
    """What a running worker serves: the topologies deployed on the control topic (the latest
    version of each, enabled or not), or the topology directory before the worker has started."""
    if worker.runtime is not None:
        catalog = worker.runtime.catalog
        topologies = [tv for name in sorted(catalog.current) if (tv := catalog.latest(name)) is not None]
    else:
        topologies = load_topology_dir(worker.settings.topology_dir, worker.registry, missing_ok=True)
    return build_asyncapi(worker.settings, worker.registry, topologies)


def _sinks(doc: _Doc, tvs: list[TopologyVersion]) -> None:
    writers: dict[str, list[str]] = {}
    for tv in tvs:
        for node_id, spec in tv.topology.nodes.items():
            if spec.sink:
                feeders = [n for n, s in tv.topology.nodes.items() if node_id in s.next]
                writers.setdefault(spec.sink, []).append(f"{tv.name} (from {', '.join(feeders) or '-'})")
    for topic, sources in sorted(writers.items()):
        message = doc.node_message(
            f"sink.{topic}",
            f"{topic} result",
            "The output body of the node before the sink, with the process headers (`node-name` is the topic).",
            {"$ref": "#/components/schemas/AnyJson"},
        )
        doc.channel(
            f"sink.{topic}", topic, f"Sink written by: {'; '.join(sources)}.", [message], ("send",), managed=False
        )


def _inbound(doc: _Doc, tvs: list[TopologyVersion]) -> None:
    starts: dict[str, list[str]] = {}
    for tv in tvs:
        for start in tv.topology.start:
            if start.topic:
                starts.setdefault(start.topic, []).append(f"{tv.name} at {tv.topology.start_node(start)}")
    for topic, targets in sorted(starts.items()):
        message = doc.message(
            f"inbound.{topic}",
            title=f"{topic} record",
            description="Written by another system: each record starts a process with its body as the start "
            "node's input, for the install named by the `user` header, else by the key. A record naming no "
            "install, or with a body that is not JSON, goes to trash.",
            headers={
                "type": "object",
                "properties": {H.USER: _string("The install the process runs for; wins over the key.")},
            },
            payload={"$ref": "#/components/schemas/AnyJson"},
            bindings=_key("user: the install, when the `user` header is not set"),
        )
        doc.channel(f"inbound.{topic}", topic, f"Starts: {'; '.join(targets)}.", [message], ("receive",), managed=False)


def _servers(settings: Settings) -> dict[str, Any]:
    hosts = [h.strip() for h in settings.kafka_bootstrap_servers.split(",") if h.strip()]
    if not hosts:
        return {
            "embedded": {
                "host": "127.0.0.1:{port}",
                "protocol": "kafka",
                "description": "Embedded broker started by `shoptet-worker up` on a free port "
                "(written to var/worker.json); set KAFKA_BOOTSTRAP_SERVERS for a real cluster.",
                "variables": {"port": {"description": "chosen at start"}},
            }
        }
    protocol = "kafka-secure" if settings.kafka_security_protocol != "PLAINTEXT" else "kafka"
    return {f"broker{i}": {"host": h, "protocol": protocol} for i, h in enumerate(hosts)}
