"""Topology files: YAML that wires nodes into a process, validated with the line at fault.

A bad file is refused with ``file:line: reason`` so an operator can fix it; nothing in a running
worker changes until a file validates completely.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from worker.registry import NodeRegistry, default_registry
from worker.topics import KAFKA_TOPIC_NAME, TopicNames
from worker.webhook_events import SHOPTET_WEBHOOK_EVENTS

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
#: The applications installs can belong to (``applications.registry`` builds one of each). A topology
#: naming another would serve no install, so its cron and webhooks would never fire.
APPLICATIONS = frozenset({"shoptet-premium", "shoptet"})


class TopologyError(ValueError):
    """A topology file that cannot be deployed; ``str()`` is ``file:line: reason``."""

    def __init__(self, source: str, line: int | None, reason: str) -> None:
        self.source, self.line, self.reason = source, line, reason
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {reason}")


class RetrySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    interval: float | None = Field(default=None, gt=0, description="seconds before the first retry")
    max_hops: int | None = Field(default=None, ge=0, description="retries before trash")


class NodeSpec(BaseModel):
    """One step of a process: a node type (``node``) or an external topic (``sink``)."""

    model_config = ConfigDict(extra="forbid")
    node: str | None = None
    sink: str | None = None
    next: list[str] = Field(default_factory=list)
    application: str | None = None
    concurrency: int | None = Field(default=None, ge=1, le=1000)
    ordered: bool | None = None
    retry: RetrySpec = Field(default_factory=RetrySpec)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_kind(self) -> NodeSpec:
        if (self.node is None) == (self.sink is None):
            raise ValueError("a node needs exactly one of `node` (a node type) or `sink` (a topic)")
        if self.sink is not None and self.next:
            raise ValueError("a sink has no `next`: it publishes to an external topic")
        return self


class StartSpec(BaseModel):
    """One trigger: cron, Shoptet webhook events, manual run, an inbound Kafka topic, or an install
    of the topology's application being added (``installed``: e.g. subscribing its webhooks)."""

    model_config = ConfigDict(extra="forbid")
    cron: str | None = None
    webhook: list[str] | None = None
    manual: bool = False
    topic: str | None = None
    installed: bool = False
    to: str | None = None

    @field_validator("webhook", mode="before")
    @classmethod
    def _one_event_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if not croniter.is_valid(value):
            raise ValueError(f"bad cron expression {value!r}")
        if not _checks_new_rules(info):
            return value
        fields = len(value.split())
        if not value.startswith("@") and fields != 5:
            # croniter takes a sixth field as seconds; the scheduler ticks once a minute
            raise ValueError(f"bad cron expression {value!r}: 5 fields (minute hour day month weekday), not {fields}")
        try:  # croniter's extensions (H, ...) pass is_valid and may still fail when matched
            croniter.match(value, datetime(2024, 1, 1, tzinfo=UTC))
        except Exception as exc:
            raise ValueError(f"bad cron expression {value!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_trigger(self) -> StartSpec:
        given = [k for k in ("cron", "webhook", "topic", "manual", "installed") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "a start needs exactly one of `cron`, `webhook`, `manual: true`, `topic`, `installed: true`"
            )
        return self


class Topology(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    application: str | None = None
    imports: list[str] = Field(default_factory=list)
    start: list[StartSpec] = Field(min_length=1)
    nodes: dict[str, NodeSpec] = Field(min_length=1)

    @field_validator("start", mode="before")
    @classmethod
    def _one_start_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @property
    def first_node(self) -> str:
        return next(iter(self.nodes))

    def start_node(self, start: StartSpec) -> str:
        return start.to or self.first_node

    def serves(self, application: str) -> bool:
        """Whether installs of ``application`` run this topology: a topology without an application
        serves every application's installs (the ingress routes webhooks by this rule)."""
        return self.application in (None, application)

    def webhook_events(self) -> set[str]:
        return {event for s in self.start for event in (s.webhook or [])}

    def node_types(self) -> set[str]:
        return {spec.node for spec in self.nodes.values() if spec.node}

    def application_of(self, node_id: str, default: str | None = None) -> str | None:
        spec = self.nodes[node_id]
        return spec.application or self.application or default


class TopologyVersion(BaseModel):
    """A validated topology plus the source it came from; the version is a hash of that source."""

    topology: Topology
    version: str
    source: str

    @property
    def name(self) -> str:
        return self.topology.name

    def own_topics(self) -> set[str]:
        """The topics this version brings: its sinks and the topics it starts from. Whoever deploys
        it creates them, since a cluster may not create topics on first use."""
        sinks = {spec.sink for spec in self.topology.nodes.values() if spec.sink}
        return sinks | {start.topic for start in self.topology.start if start.topic}


def version_of(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:12]


# --- YAML with line numbers -----------------------------------------------------------------


#: More values than any topology needs; a file past it is refused before it is walked further.
MAX_YAML_VALUES = 100_000


class _Lines:
    """Line numbers as an editor counts them: PyYAML also breaks lines at U+0085, U+2028 and
    U+2029 (pasted into a description, they moved every later error's line down)."""

    def __init__(self, source: str) -> None:
        self._breaks = [i for i, ch in enumerate(source) if ch == "\n"]

    def at(self, index: int) -> int:
        return bisect.bisect_right(self._breaks, index - 1) + 1

    def of(self, mark: yaml.Mark) -> int:
        return self.at(mark.index)


def _line_index(
    node: yaml.Node,
    path: tuple[Any, ...],
    index: dict[tuple[Any, ...], int],
    origin: str,
    lines: _Lines,
    enclosing: frozenset[int] = frozenset(),
) -> None:
    """Record the line of every value and key path; refuse duplicate keys (PyYAML keeps the last)
    and an alias inside what it names (``enclosing``: the ids of the nodes around this one)."""
    if id(node) in enclosing:
        raise TopologyError(origin, lines.of(node.start_mark), "a YAML alias refers to a mapping or list around it")
    if len(index) > MAX_YAML_VALUES:
        # aliases of aliases multiply (ten lists of ten aliases, six deep, are a million values):
        # every reader of the file, each worker's catalog included, would walk them all
        raise TopologyError(
            origin, lines.of(node.start_mark), f"over {MAX_YAML_VALUES:,} values once its YAML aliases are expanded"
        )
    enclosing = enclosing | {id(node)}
    index[path] = lines.of(node.start_mark)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = lines.of(key_node.start_mark)
            if key in seen:
                raise TopologyError(origin, line, f"duplicate key {key!r} (first at line {seen[key]})")
            seen[key] = line
            index[(*path, key)] = line
            _line_index(value_node, (*path, key), index, origin, lines, enclosing)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, i), index, origin, lines, enclosing)


def _line_for(index: dict[tuple[Any, ...], int], loc: Iterable[Any]) -> int | None:
    path = tuple(loc)
    while path:
        if path in index:
            return index[path]
        path = path[:-1]
    return index.get(())


def _checks_new_rules(info: ValidationInfo) -> bool:
    return not (isinstance(info.context, dict) and info.context.get("deployed"))


def parse_topology(
    source: str,
    origin: str = "<topology>",
    registry: NodeRegistry | None = None,
    *,
    deployed: bool = False,
    topics: TopicNames | None = None,
) -> TopologyVersion:
    """Validate one topology document. With a registry, node types and imports are checked too;
    with the worker's ``topics``, that no start or sink is one of its internal topics.

    ``deployed`` is for a version read back from the control topic: it passed the checks of the
    worker that deployed it, and checks added since (known applications and webhook events, five
    cron fields) must not stop a topology that ran before an upgrade. Only new deploys meet them.
    """
    try:
        root = yaml.compose(source)  # nodes with their lines, for the errors below
        data = yaml.safe_load(source)  # refuses tags (!!python/name:...) that compose accepts
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        position = mark.index if mark is not None else getattr(exc, "position", None)  # ReaderError: no mark
        line = _Lines(source).at(position) if isinstance(position, int) else None
        # the parser's problem alone: its whole report is several lines of context and a caret
        # drawing, with a line number of its own that disagreed with the one in front
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        reason = f"{context}: {problem}" if context else problem
        raise TopologyError(origin, line, f"not valid YAML: {reason}") from None
    except RecursionError:  # nested thousands deep: refused like any bad file, not a traceback
        raise TopologyError(origin, 1, "not valid YAML: nested too deeply") from None
    if root is None or not isinstance(root, yaml.MappingNode):
        raise TopologyError(origin, 1, "a topology file is a YAML mapping with name, start and nodes")
    index: dict[tuple[Any, ...], int] = {}
    _line_index(root, (), index, origin, _Lines(source))
    try:
        topology = Topology.model_validate(data, context={"deployed": deployed})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        field = ".".join(str(p) for p in loc) or "file"
        raise TopologyError(origin, _line_for(index, loc), f"{field}: {first['msg']}") from None
    _check_references(topology, index, origin, registry, new_rules=not deployed)
    if topics is not None:
        _check_internal_topics(topology, index, origin, topics)
    return TopologyVersion(topology=topology, version=version_of(source), source=source)


def _check_references(
    topology: Topology,
    index: dict[tuple[Any, ...], int],
    origin: str,
    registry: NodeRegistry | None,
    *,
    new_rules: bool = True,
) -> None:
    if registry is not None:
        for i, path in enumerate(topology.imports):
            try:
                registry.import_path(path)
            except Exception as exc:
                raise TopologyError(origin, index.get(("imports", i)), f"cannot import {path!r}: {exc}") from None
    if new_rules:
        _check_names(topology, index, origin)
    built: set[str] = set()
    for node_id, spec in topology.nodes.items():
        if registry is not None and spec.node is not None and spec.node not in registry:
            raise TopologyError(origin, index.get(("nodes", node_id, "node")), f"unknown node type {spec.node!r}")
        if new_rules and registry is not None and spec.node is not None:
            _check_options(node_id, spec, registry, index, origin)
            if spec.node not in built:
                _check_builds(node_id, spec.node, registry, index, origin)
                built.add(spec.node)
        for i, target in enumerate(spec.next):
            if target not in topology.nodes:
                line = index.get(("nodes", node_id, "next", i))
                raise TopologyError(origin, line, f"node {node_id!r} has an edge to missing node {target!r}")
            if new_rules and target in spec.next[:i]:
                # routed to twice, every output went out twice: a stock movement applied twice
                line = index.get(("nodes", node_id, "next", i))
                raise TopologyError(origin, line, f"node {node_id!r} lists its follower {target!r} twice")
    for i, start in enumerate(topology.start):
        if start.to is not None and start.to not in topology.nodes:
            raise TopologyError(origin, index.get(("start", i, "to")), f"start targets missing node {start.to!r}")
        if topology.nodes[topology.start_node(start)].sink is not None:
            raise TopologyError(origin, index.get(("start", i)), "a start cannot target a sink")
        if start.installed and topology.application is None:
            line = index.get(("start", i, "installed"))
            raise TopologyError(origin, line, "an `installed` start needs the topology's `application`")
        if new_rules and start.cron and registry is not None:
            # with no application a tick fires once, for no install: every tick went to trash
            node = topology.start_node(start)
            cls = registry.get(topology.nodes[node].node or "")
            # the scheduler fires per install of the topology's application (a node's own does not count)
            if cls is not None and cls.needs_install and topology.application is None:
                line = index.get(("start", i, "cron"))
                raise TopologyError(
                    origin, line, f"a cron start of {node!r} needs an install: give the topology its `application`"
                )


def _check_builds(
    node_id: str, node_type: str, registry: NodeRegistry, index: dict[tuple[Any, ...], int], origin: str
) -> None:
    """Build the node once, as every worker will: a custom node whose constructor fails (a setting
    it reads missing) passed validate and deploy, and then no worker could consume its type."""
    cls = registry.get(node_type)
    if cls is None:
        return
    try:
        cls()
    except Exception as exc:
        line = index.get(("nodes", node_id, "node"))
        raise TopologyError(origin, line, f"node type {node_type!r} cannot be built: {exc!r}") from None


def _check_options(
    node_id: str, spec: NodeSpec, registry: NodeRegistry, index: dict[tuple[Any, ...], int], origin: str
) -> None:
    """A node's ``options`` against the model its type declares (``Node.Options``): a misspelt key
    was ignored and a wrong type read as "not set", in silence, or failed every message at run time."""
    cls = registry.get(spec.node or "")
    model = cls.Options if cls is not None else None
    if model is None:
        return
    try:
        model.model_validate(spec.options)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ["nodes", node_id, "options", *first["loc"]]
        field = ".".join(str(p) for p in first["loc"])
        known = ", ".join(model.model_fields) or "none"
        reason = f"option {field!r} of {spec.node}: {first['msg']} (its options: {known})"
        raise TopologyError(origin, _line_for(index, loc), reason) from None


def _check_names(topology: Topology, index: dict[tuple[Any, ...], int], origin: str) -> None:
    """Names that are valid YAML and still serve nothing: an application no install belongs to
    (its cron and webhooks never fire), a webhook event Shoptet does not send."""
    known = ", ".join(sorted(APPLICATIONS))
    if topology.application is not None and topology.application not in APPLICATIONS:
        line = index.get(("application",))
        raise TopologyError(origin, line, f"unknown application {topology.application!r} (known: {known})")
    for node_id, spec in topology.nodes.items():
        if spec.application is not None and spec.application not in APPLICATIONS:
            line = index.get(("nodes", node_id, "application"))
            raise TopologyError(origin, line, f"unknown application {spec.application!r} (known: {known})")
    for i, start in enumerate(topology.start):
        for j, event in enumerate(start.webhook or []):
            if event not in SHOPTET_WEBHOOK_EVENTS:
                line = index.get(("start", i, "webhook", j)) or index.get(("start", i, "webhook"))
                raise TopologyError(origin, line, f"unknown Shoptet webhook event {event!r}")
        if start.topic is not None and not KAFKA_TOPIC_NAME.fullmatch(start.topic):
            raise TopologyError(origin, index.get(("start", i, "topic")), f"not a Kafka topic name: {start.topic!r}")
    inbound = {start.topic for start in topology.start if start.topic}
    for node_id, spec in topology.nodes.items():
        if spec.sink is None:
            continue
        line = index.get(("nodes", node_id, "sink"))
        if not KAFKA_TOPIC_NAME.fullmatch(spec.sink):
            raise TopologyError(origin, line, f"not a Kafka topic name: {spec.sink!r}")
        if spec.sink in inbound:  # each output would start the topology again, for ever
            raise TopologyError(origin, line, f"sink {spec.sink!r} is a topic this topology starts on")


def _check_internal_topics(
    topology: Topology, index: dict[tuple[Any, ...], int], origin: str, topics: TopicNames
) -> None:
    for i, start in enumerate(topology.start):
        if start.topic is not None and topics.is_internal(start.topic):
            line = index.get(("start", i, "topic"))
            raise TopologyError(origin, line, f"{start.topic!r} is one of the worker's own topics, not an inbound one")
    for node_id, spec in topology.nodes.items():
        if spec.sink is not None and topics.is_internal(spec.sink):
            line = index.get(("nodes", node_id, "sink"))
            raise TopologyError(origin, line, f"sink {spec.sink!r} is one of the worker's own topics")


def load_topology_file(
    path: Path, registry: NodeRegistry | None = None, *, topics: TopicNames | None = None
) -> TopologyVersion:
    """One file, refused as a :class:`TopologyError` also when it cannot be read as UTF-8 text.

    The file may use the built-in node types and those of its own ``imports`` only: checked against
    a registry several files shared, a file without the import its custom node needs loaded when
    another file imported it first, and whether it did depended on the files' order. Its imports
    then go into ``registry`` as well (what runs the file needs them)."""
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise TopologyError(str(path), line, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise TopologyError(str(path), None, f"cannot read the file: {exc.strerror or exc}") from None
    if registry is None:
        return parse_topology(source, str(path), None, topics=topics)
    version = parse_topology(source, str(path), default_registry(), topics=topics)
    for module in version.topology.imports:
        registry.import_path(module)
    return version


def load_topology_dir(
    directory: Path,
    registry: NodeRegistry | None = None,
    *,
    topics: TopicNames | None = None,
    missing_ok: bool = False,
) -> list[TopologyVersion]:
    """Every ``*.yaml``/``*.yml`` file; names must be unique across the directory. A path that is
    not a directory is refused (a file's path given for it read as an empty directory); with
    ``missing_ok``, one that is not there holds none (TOPOLOGY_DIR: topologies may all come through
    `topology deploy`)."""
    if missing_ok and not directory.exists():
        return []
    if not directory.is_dir():
        reason = "not a directory" if directory.exists() else "no such directory"
        raise TopologyError(str(directory), None, f"{reason} (TOPOLOGY_DIR)")
    paths = sorted(p for p in [*directory.glob("*.yaml"), *directory.glob("*.yml")] if p.is_file())
    versions = [load_topology_file(path, registry, topics=topics) for path in paths]
    check_unique_names(zip(paths, versions, strict=True))
    return versions


def check_unique_names(loaded: Iterable[tuple[Path, TopologyVersion]]) -> None:
    """Refuse two files of one topology name: deployed together, the last would silently win."""
    found: dict[str, Path] = {}
    for path, version in loaded:
        if version.name in found:
            line = next((n for n, text in enumerate(version.source.split("\n"), 1) if text.startswith("name:")), 1)
            raise TopologyError(
                str(path), line, f"topology name {version.name!r} is used by another file ({found[version.name]})"
            )
        found[version.name] = path
