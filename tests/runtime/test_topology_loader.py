from __future__ import annotations

from pathlib import Path

import pytest

from worker.registry import NodeRegistry, default_registry
from worker.topics import TopicNames
from worker.topology import TopologyError, TopologyVersion, load_topology_dir, load_topology_file, parse_topology

GOOD = """\
name: sample
imports: [tests.runtime.sample_nodes]
start:
  - manual: true
nodes:
  emit: {node: test-emit-items, next: [pass]}
  pass: {node: test-passthrough, next: [out], concurrency: 4, retry: {interval: 1, max_hops: 3}}
  out: {sink: sample.out}
"""


@pytest.fixture(scope="module")
def registry() -> NodeRegistry:
    return default_registry()


def refused(source: str, registry: NodeRegistry) -> TopologyError:
    with pytest.raises(TopologyError) as info:
        parse_topology(source, "bad.yaml", registry)
    return info.value


def test_good_file_loads_with_custom_nodes(registry: NodeRegistry) -> None:
    tv = parse_topology(GOOD, "good.yaml", registry)
    assert tv.topology.first_node == "emit"
    assert tv.topology.nodes["pass"].concurrency == 4
    assert "test-emit-items" in registry


def test_unknown_node_type_names_its_line(registry: NodeRegistry) -> None:
    error = refused(GOOD.replace("test-passthrough", "no-such-node"), registry)
    assert error.line == 7
    assert "unknown node type 'no-such-node'" in str(error)
    assert str(error).startswith("bad.yaml:7:")


def test_edge_to_missing_node(registry: NodeRegistry) -> None:
    error = refused(GOOD.replace("next: [out]", "next: [nowhere]"), registry)
    assert error.line == 7
    assert "missing node 'nowhere'" in error.reason


def test_duplicate_node_id(registry: NodeRegistry) -> None:
    error = refused(GOOD + "  emit: {sink: again}\n", registry)
    assert error.line == 9
    assert "duplicate key 'emit' (first at line 6)" in error.reason


def test_no_start(registry: NodeRegistry) -> None:
    error = refused(GOOD.replace("start:\n  - manual: true\n", ""), registry)
    assert "start" in error.reason and "required" in error.reason.lower()


def test_empty_start_list(registry: NodeRegistry) -> None:
    error = refused(GOOD.replace("  - manual: true\n", "").replace("start:", "start: []"), registry)
    assert error.line == 3


def test_bad_cron(registry: NodeRegistry) -> None:
    error = refused(GOOD.replace("manual: true", 'cron: "61 * * * *"'), registry)
    assert error.line == 4
    assert "bad cron expression" in error.reason


@pytest.mark.parametrize(
    ("cron", "reason"),
    [
        ("*/10 * * * * *", "5 fields (minute hour day month weekday), not 6"),  # seconds, silently dropped
        ("H * * * *", "bad cron expression 'H * * * *'"),
    ],
)
def test_a_cron_the_scheduler_cannot_keep_is_refused(registry: NodeRegistry, cron: str, reason: str) -> None:
    error = refused(GOOD.replace("manual: true", f'cron: "{cron}"'), registry)
    assert error.line == 4 and reason in error.reason
    assert parse_topology(GOOD.replace("manual: true", 'cron: "@hourly"'), registry=registry)


def test_an_unknown_application_is_refused_with_its_line(registry: NodeRegistry) -> None:
    """Such a topology serves no install: its cron and webhooks would never fire."""
    error = refused(GOOD.replace("start:", "application: shoptet-premiun\nstart:"), registry)
    assert (error.line, error.reason) == (3, "unknown application 'shoptet-premiun' (known: shoptet, shoptet-premium)")
    error = refused(GOOD.replace("concurrency: 4,", "application: shoptett, concurrency: 4,"), registry)
    assert error.line == 7 and "unknown application 'shoptett'" in error.reason


def test_a_recursive_yaml_alias_is_refused_with_its_line(registry: NodeRegistry) -> None:
    source = "name: x\nstart: [{manual: true}]\nnodes: &n {a: {node: test-passthrough, next: *n}}\n"
    error = refused(source, registry)
    assert (error.line, error.reason) == (3, "a YAML alias refers to a mapping or list around it")


def test_aliases_of_aliases_are_refused_before_they_multiply(registry: NodeRegistry) -> None:
    """Nine levels of ten aliases each: a billion values. Walking them hung `validate`, `up` and
    every worker reading the deploy; the walk stops past a size no topology reaches."""
    lines = ["name: bomb", "x0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
    lines += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    source = "\n".join([*lines, "start: [{manual: true}]", "nodes: {out: {sink: s}}"]) + "\n"
    error = refused(source, registry)
    assert "over 100,000 values once its YAML aliases are expanded" in error.reason


def test_start_needs_exactly_one_trigger(registry: NodeRegistry) -> None:
    error = refused(GOOD.replace("manual: true", "manual: true\n    topic: x"), registry)
    assert error.line == 4


def test_an_installed_start_needs_the_topologys_application(registry: NodeRegistry) -> None:
    error = refused(GOOD.replace("manual: true", "installed: true"), registry)
    assert (error.line, error.reason) == (4, "an `installed` start needs the topology's `application`")
    tv = parse_topology(GOOD.replace("start:", "application: shoptet\nstart:").replace("manual", "installed"))
    assert tv.topology.start[0].installed
    assert refused(GOOD.replace("manual: true", "installed: true\n    manual: true"), registry).line == 4


def test_unknown_key_and_sink_with_next(registry: NodeRegistry) -> None:
    assert refused(GOOD.replace("concurrency: 4", "concurency: 4"), registry).line == 7
    error = refused(GOOD.replace("out: {sink: sample.out}", "out: {sink: sample.out, next: [emit]}"), registry)
    assert error.line == 8 and "sink has no `next`" in error.reason


def test_not_yaml(registry: NodeRegistry) -> None:
    error = refused("name: x\nnodes: [unclosed\n", registry)
    assert error.line == 3 and "not valid YAML" in error.reason  # where the parser gave up
    assert "\n" not in str(error) and "^" not in str(error)  # one line, no caret drawing
    error = refused("name: x\nstart:\n  - manual: true\n nodes: {}\n", registry)  # bad indentation
    assert error.line == 4 and "not valid YAML" in error.reason


def test_bad_import(registry: NodeRegistry) -> None:
    error = refused(GOOD.replace("tests.runtime.sample_nodes", "no.such.module"), registry)
    assert error.line == 2 and "cannot import" in error.reason


def test_start_to_missing_node(registry: NodeRegistry) -> None:
    error = refused(GOOD.replace("manual: true", "manual: true\n    to: ghost"), registry)
    assert error.line == 5


def test_shipped_topologies_are_valid(registry: NodeRegistry) -> None:
    shipped = load_topology_dir(Path(__file__).parents[2] / "topology", registry)
    assert {tv.name for tv in shipped} >= {"order-sync", "order-import"}


def test_a_redeploy_that_keeps_the_cron_starts_keeps_the_time_they_ran_since(registry: NodeRegistry) -> None:
    """Every pointer write counted as a new deployment: a tick missed during a deploy that changed
    only a description (or an enable of an enabled topology) was never caught up."""
    import json

    from worker.catalog import TopologyCatalog

    cron = GOOD.replace("  - manual: true", '  - cron: "0 3 * * *"')
    catalog = TopologyCatalog(registry)
    first = parse_topology(cron, "good.yaml", registry)
    catalog.add_local(first)
    since = catalog.current["sample"].deployed_at
    described = parse_topology("description: nightly\n" + cron, "good.yaml", registry)
    assert catalog.crons_since(described, enabled=True) == since
    assert catalog.crons_since(described, enabled=False) == ""
    moved = parse_topology(cron.replace("0 3", "0 4"), "good.yaml", registry)
    assert catalog.crons_since(moved, enabled=True) == ""  # a moved cron fires no minute from before

    catalog.add_local(described, True, catalog.crons_since(described, True))
    assert catalog.current["sample"].crons_run_since == since
    # in a record of its own: a pointer with a field it did not know was dropped by the build before
    from worker.catalog import _pointer_records

    records = dict(_pointer_records("sample", described.version, True, since))
    assert set(json.loads(records["current:sample"])) == {"name", "version", "enabled", "deployed_at"}
    assert json.loads(records["crons-since:sample"])["since"] == since
    # matched by the pointer's time to the microsecond: a redeploy in the same second as an enable
    # took the enable's record for its own
    assert "." in json.loads(records["current:sample"])["deployed_at"]
    moved_pointer = {"name": "sample", "version": moved.version, "enabled": True, "deployed_at": "2030-01-01T00:00:01"}
    catalog.apply("crons-since:sample", json.dumps({"deployed_at": "2030-01-01T00:00:00", "since": since}).encode())
    catalog.apply("current:sample", json.dumps(moved_pointer).encode())
    assert catalog.current["sample"].crons_run_since == "2030-01-01T00:00:01"
    # a pointer a newer worker wrote, with a field this one does not know, still applies
    pointer = {"name": "sample", "version": described.version, "enabled": False, "deployed_at": "", "x": 1}
    catalog.apply("current:sample", json.dumps(pointer).encode())
    assert catalog.current["sample"].enabled is False


def test_a_pointer_to_a_version_this_worker_cannot_load_keeps_the_running_one(registry: NodeRegistry) -> None:
    """The CLI could import a custom node this worker cannot (or a rolling upgrade is under way):
    new starts keep the version this worker runs instead of stopping; a disable still applies."""
    import json

    from worker.catalog import TopologyCatalog

    catalog = TopologyCatalog(registry)
    catalog.add_local(parse_topology(GOOD, "good.yaml", registry))
    running = catalog.current["sample"].version
    unloadable = GOOD.replace("imports: [tests.runtime.sample_nodes]", "imports: [no_such_module.nodes]")

    def deploy(version: str, enabled: bool = True) -> None:
        if version != running:
            record = {"name": "sample", "version": version, "source": unloadable}
            catalog.apply(f"version:sample:{version}", json.dumps(record).encode())
        pointer = {"name": "sample", "version": version, "enabled": enabled, "deployed_at": ""}
        catalog.apply("current:sample", json.dumps(pointer).encode())

    deploy("v-new")
    active = catalog.active("sample")
    assert active is not None and active.version == running
    deploy("v-new", enabled=False)
    assert catalog.active("sample") is None
    assert catalog.current["sample"].version == running
    # the CLI shows and republishes the pointer as deployed: its enable must not roll workers back
    assert (catalog.deployed["sample"].version, catalog.deployed["sample"].enabled) == ("v-new", False)
    # and `topology show` / `diff` show what is deployed, not the version before it
    assert catalog.deployed_source("sample") == ("v-new", unloadable)
    assert catalog.deployed_source("sample", running) == (running, GOOD)
    assert catalog.deployed_source("other") is None


def test_an_unsafe_yaml_tag_is_refused_with_its_line(registry: NodeRegistry) -> None:
    error = refused(GOOD.replace("name: sample", "name: !!python/name:os.system sample"), registry)
    assert error.line == 1 and "not valid YAML" in str(error)


def test_node_limits_follow_every_active_topology(registry: NodeRegistry) -> None:
    """One consumer serves a node type in every topology: the highest concurrency asked, ordered
    when any topology asks it, and the node's own defaults where none says."""
    from tests.runtime.sample_nodes import Passthrough
    from worker.app import node_limits

    def version(name: str, pass_spec: str) -> TopologyVersion:
        source = GOOD.replace("name: sample", f"name: {name}")
        return parse_topology(source.replace("concurrency: 4, ", pass_spec), registry=registry)

    node = Passthrough()
    assert node.concurrency == 10
    assert node_limits(node, []) == (10, False)
    assert node_limits(node, [version("a", "")]) == (10, False)
    assert node_limits(node, [version("a", "concurrency: 4, "), version("b", "concurrency: 17, ")]) == (17, False)
    assert node_limits(node, [version("a", "concurrency: 4, ")]) == (4, False)
    # a topology that does not say asks the node's defaults
    assert node_limits(node, [version("a", "concurrency: 4, "), version("b", "ordered: true, ")]) == (10, True)

    writer_class = registry.get("shoptet-update-order-status")
    assert writer_class is not None and writer_class.ordered
    writer = writer_class()
    silent = version("a", "")
    silent.topology.nodes["pass"].node = writer.name
    unordered = version("b", "ordered: false, ")
    unordered.topology.nodes["pass"].node = writer.name
    assert node_limits(writer, [unordered]) == (10, False)
    assert node_limits(writer, [silent, unordered]) == (10, True)  # the silent one keeps its order


def test_topologies_know_the_applications_the_worker_builds() -> None:
    import inspect

    from applications import registry as applications_registry
    from applications.base import Application
    from worker.topology import APPLICATIONS

    built = {
        cls.name
        for cls in vars(applications_registry).values()
        if inspect.isclass(cls) and issubclass(cls, Application) and cls is not Application
    }
    assert built == APPLICATIONS


def test_an_unknown_webhook_event_is_refused_with_its_line(registry: NodeRegistry) -> None:
    error = refused(GOOD.replace("manual: true", "webhook: [order:create, order:craete]"), registry)
    assert (error.line, error.reason) == (4, "unknown Shoptet webhook event 'order:craete'")
    multi = GOOD.replace("manual: true", "webhook:\n      - order:create\n      - ordr:update")
    assert refused(multi, registry).line == 6


def test_the_webhook_events_are_those_shoptets_api_description_lists() -> None:
    """The events table in openapi.yaml's description: ``name:event | what | instance | ...``."""
    import re

    import yaml

    from tests.openapi_spec import SPEC_PATH
    from worker.webhook_events import SHOPTET_WEBHOOK_EVENTS

    description = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))["info"]["description"]
    listed = set(re.findall(r"^ *([a-zA-Z]+:[a-zA-Z]+)(?: \(\*\))? +\|", description, flags=re.MULTILINE))
    assert listed == SHOPTET_WEBHOOK_EVENTS
    # the beta events, marked "(*)" in the table: a topology starting on product:update was refused
    assert {"product:update", "stock:soldOut", "productVariant:create"} <= SHOPTET_WEBHOOK_EVENTS


def test_the_system_webhooks_are_listed_by_shoptet_and_left_out_of_registration(registry: NodeRegistry) -> None:
    """A topology may start on ``addon:uninstall``; Shoptet refuses to register it through the API,
    and a registration call naming it is refused whole, so the catalog does not hand it over."""
    import json
    import re

    import yaml

    from tests.openapi_spec import SPEC_PATH
    from worker.catalog import TopologyCatalog
    from worker.webhook_events import SYSTEM_WEBHOOK_EVENTS

    description = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))["info"]["description"]
    system = description.split("### System Webhooks", 1)[1].split("\n## ", 1)[0]
    assert (
        set(re.findall(r"^ *([a-zA-Z]+:[a-zA-Z]+)(?: \(\*\))? +\|", system, flags=re.MULTILINE))
        == SYSTEM_WEBHOOK_EVENTS
    )

    source = GOOD.replace("  - manual: true", "  - webhook: [addon:uninstall, order:create]")
    tv = parse_topology(source, registry=registry)
    catalog = TopologyCatalog(registry)
    catalog.apply(
        f"version:sample:{tv.version}", json.dumps({"name": "sample", "version": tv.version, "source": source}).encode()
    )
    pointer = {"name": "sample", "version": tv.version, "enabled": True, "deployed_at": ""}
    catalog.apply("current:sample", json.dumps(pointer).encode())
    assert tv.topology.webhook_events() == {"addon:uninstall", "order:create"}
    assert catalog.webhook_events() == frozenset({"order:create"})


def test_a_version_deployed_before_the_newer_checks_keeps_running(registry: NodeRegistry) -> None:
    """Checks added since a version was deployed apply to new deploys only: an upgraded worker that
    refused the deployed version would stop its cron, webhooks and in-flight messages."""
    import json

    from worker.catalog import TopologyCatalog

    old = GOOD.replace(
        "start:\n  - manual: true", 'start:\n  - cron: "0 */10 * * * *"\n  - webhook: order:craete'
    ).replace("start:", "application: shoptet-premiun\nstart:", 1)
    with pytest.raises(TopologyError):
        parse_topology(old, registry=registry)
    catalog = TopologyCatalog(registry)
    catalog.apply("version:sample:v-old", json.dumps({"name": "sample", "version": "v-old", "source": old}).encode())
    pointer = {"name": "sample", "version": "v-old", "enabled": True, "deployed_at": ""}
    catalog.apply("current:sample", json.dumps(pointer).encode())
    active = catalog.active("sample")
    assert active is not None and active.topology.application == "shoptet-premiun"
    assert [s.cron for s in active.topology.start] == ["0 */10 * * * *", None]
    # webhooks-subscribe registers the events in one call, which Shoptet would refuse whole
    assert active.topology.webhook_events() == {"order:craete"} and catalog.webhook_events() == frozenset()


def test_a_sink_the_topology_starts_on_is_refused(registry: NodeRegistry) -> None:
    """Each output would start the topology again, for ever (a Shoptet call a loop)."""
    looping = GOOD.replace("manual: true", "topic: sample.out")
    error = refused(looping, registry)
    assert (error.line, error.reason) == (8, "sink 'sample.out' is a topic this topology starts on")


def test_a_topic_kafka_cannot_name_is_refused_with_its_line(registry: NodeRegistry) -> None:
    error = refused(GOOD.replace("sink: sample.out", "sink: 'sample out!'"), registry)
    assert (error.line, error.reason) == (8, "not a Kafka topic name: 'sample out!'")
    error = refused(GOOD.replace("manual: true", "topic: erp/orders"), registry)
    assert (error.line, error.reason) == (4, "not a Kafka topic name: 'erp/orders'")


def test_a_cron_start_of_a_node_that_needs_an_install_needs_an_application(registry: NodeRegistry) -> None:
    """With no application a tick fires once, for no install, and every tick went to trash."""
    cron = "name: c\nstart:\n  - cron: '*/5 * * * *'\nnodes:\n  list: {node: shoptet-get-orders-list, next: [out]}\n"
    cron += "  out: {sink: c.out}\n"
    error = refused(cron, registry)
    assert error.line == 3 and "needs an install" in error.reason
    parse_topology(cron.replace("name: c\n", "name: c\napplication: shoptet-premium\n"), registry=registry)
    # the scheduler fires per install of the topology's application: a node's own does not count
    node_level = cron.replace("next: [out]}", "next: [out], application: shoptet-premium}")
    assert "needs an install" in refused(node_level, registry).reason


def test_yaml_nested_thousands_deep_is_refused_not_a_traceback(registry: NodeRegistry) -> None:
    deep = "name: x\nstart: " + "[" * 5000 + "]" * 5000 + "\n"
    assert "nested too deeply" in refused(deep, registry).reason


@pytest.mark.parametrize(
    ("old", "new", "line", "reason"),
    [
        ("manual: true", "topic: shoptet.process-events", 4, "'shoptet.process-events' is one of the worker's"),
        ("manual: true", "topic: shoptet.node.shoptet-get-order-detail", 4, "one of the worker's own topics"),
        ("sink: sample.out", "sink: shoptet.processes", 8, "sink 'shoptet.processes' is one of the worker's"),
        ("sink: sample.out", "sink: shoptet.retry", 8, "sink 'shoptet.retry' is one of the worker's"),
    ],
)
def test_the_workers_own_topics_are_no_start_or_sink(
    registry: NodeRegistry, old: str, new: str, line: int, reason: str
) -> None:
    """A start on process-events started the topology again each time it finished; a sink into the
    ledger corrupted its counts."""
    source = GOOD.replace(old, new)
    with pytest.raises(TopologyError) as info:
        parse_topology(source, "bad.yaml", registry, topics=TopicNames("shoptet"))
    assert info.value.line == line and reason in info.value.reason
    parse_topology(source, "other-prefix.yaml", registry, topics=TopicNames("acme"))  # not this worker's


def test_an_unreadable_file_or_directory_is_refused_not_a_traceback(tmp_path: Path, registry: NodeRegistry) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(GOOD.replace("name: sample", "name: sample\ndescription: \xe9t\xe9").encode("latin-1"))
    with pytest.raises(TopologyError) as info:
        load_topology_file(latin1, registry)
    assert info.value.line == 2 and "not UTF-8" in info.value.reason
    with pytest.raises(TopologyError, match="no such directory"):
        load_topology_dir(tmp_path / "topolgy", registry)
    assert load_topology_dir(tmp_path / "topolgy", registry, missing_ok=True) == []  # TOPOLOGY_DIR at `up`
    (tmp_path / "dir.yaml").mkdir()  # not a file: left out, not read
    latin1.unlink()
    assert load_topology_dir(tmp_path, registry) == []


OPTIONS = """\
name: opts
application: shoptet-premium
start:
  - manual: true
nodes:
  list: {node: shoptet-get-orders-list, next: [detail], options: {max_pages_per_hop: 20}}
  detail: {node: shoptet-get-order-detail, next: [out]}
  out: {sink: opts.out}
"""


@pytest.mark.parametrize(
    ("old", "new", "line", "reason"),
    [
        (
            "{max_pages_per_hop: 20}",
            "{max_page_per_hop: 20}",
            6,
            "option 'max_page_per_hop' of shoptet-get-orders-list",
        ),
        ("{max_pages_per_hop: 20}", "{max_pages_per_hop: '20'}", 6, "option 'max_pages_per_hop'"),  # meant no limit
        ("{max_pages_per_hop: 20}", "{page_concurrency: lots}", 6, "option 'page_concurrency'"),
        ("{max_pages_per_hop: 20}", "{max_pages_per_hop: 0}", 6, "greater than or equal to 1"),
        ("next: [out]}", "next: [out], options: {threshold: 3}}", 7, "option 'threshold' of shoptet-get-order-detail"),
    ],
)
def test_node_options_are_checked_against_what_the_node_reads(
    registry: NodeRegistry, old: str, new: str, line: int, reason: str
) -> None:
    parse_topology(OPTIONS, "opts.yaml", registry)
    error = refused(OPTIONS.replace(old, new), registry)
    assert error.line == line and reason in error.reason, error
    # a version deployed before this check keeps running
    parse_topology(OPTIONS.replace(old, new), "opts.yaml", registry, deployed=True)


def test_options_of_a_job_finished_webhook_and_the_webhook_batches(registry: NodeRegistry) -> None:
    jobs = "name: j\nstart:\n  - webhook: [job:finished]\nnodes:\n"
    jobs += "  jobs: {node: shoptet-job-finished-webhook, next: [out], options: {endpoints: /api/orders/snapshot}}\n"
    jobs += "  out: {sink: j.out}\n"
    error = refused(jobs, registry)  # a string was matched by substring
    assert error.line == 5 and "option 'endpoints'" in error.reason and "valid list" in error.reason
    parse_topology(jobs.replace("/api/orders/snapshot", "[/api/orders/snapshot]"), registry=registry)
    assert (
        "option 'application'"
        in refused(jobs.replace("endpoints: /api/orders/snapshot", "application: shop"), registry).reason
    )


def test_every_built_in_node_says_which_options_it_reads(registry: NodeRegistry) -> None:
    """Else a typo in its options would pass the deploy (a custom node may leave them unchecked)."""
    built_in = [cls for _, cls in registry.items() if cls.__module__.startswith("nodes.")]
    assert len(built_in) == 20
    assert [cls.name for cls in built_in if cls.Options is None] == []
    # a custom node that declares no Options is not checked (test-passthrough declares none)
    parse_topology(GOOD.replace("concurrency: 4,", "concurrency: 4, options: {threshold: 3},"), registry=registry)


def test_lines_are_counted_as_an_editor_counts_them(registry: NodeRegistry, tmp_path: Path) -> None:
    """PyYAML also breaks lines at U+2028 (pasted into a description): every later line was off."""
    pasted = GOOD.replace("name: sample", "name: sample\ndescription: 'one\u2028two\u2028three'")
    error = refused(pasted.replace("test-passthrough", "test-passthru"), registry)
    assert error.line == 8  # 7 in GOOD, one line more for the description
    control = refused("name: x\nstart: [\x07]\n", registry)  # a character YAML refuses: its line
    assert control.line == 2 and "not valid YAML" in control.reason
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text("# one topology\n" + GOOD)
    with pytest.raises(TopologyError) as twice:
        load_topology_dir(tmp_path, registry)
    assert twice.value.line == 2 and "is used by another file" in twice.value.reason  # its `name:` line


def test_a_custom_node_whose_name_is_no_topic_name_is_refused_at_its_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its name names its topic and consumer group: "Acme Echo/v2" passed validate and deploy, and
    a Kafka cluster refused the topic when the workers started."""
    (tmp_path / "acme_bad_names.py").write_text(
        "from worker.envelope import Message\n"
        "from worker.node import Connector, NodeContext, Result\n\n\n"
        "class Echo(Connector):\n"
        '    name = "Acme Echo/v2"\n'
        "    needs_install = False\n\n"
        "    async def process(self, message: Message, ctx: NodeContext) -> Result:\n"
        "        return Result(body=message.body)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    source = "name: acme\nimports: [acme_bad_names]\nstart: [{manual: true}]\nnodes:\n  e: {node: Acme Echo/v2}\n"
    with pytest.raises(TopologyError, match=r"<t>:2: cannot import 'acme_bad_names': node name 'Acme Echo/v2'"):
        parse_topology(source, "<t>", NodeRegistry())


def test_a_follower_listed_twice_is_refused_with_its_line(registry: NodeRegistry) -> None:
    """Routed to twice, every output went out twice (a stock movement applied twice)."""
    error = refused(GOOD.replace("next: [out]", "next: [out, out]"), registry)
    assert error.line == 7
    assert "lists its follower 'out' twice" in error.reason


def test_a_node_that_cannot_be_built_is_refused_with_its_line(registry: NodeRegistry) -> None:
    """Its constructor reads a setting that is not there: deployed, no worker could consume it."""
    source = GOOD.replace("tests.runtime.sample_nodes", "tests.runtime.unbuildable_nodes").replace(
        "  emit: {node: test-emit-items, next: [pass]}\n  pass: {node: test-passthrough, next: [out], concurrency: 4, "
        "retry: {interval: 1, max_hops: 3}}\n",
        "  emit: {node: test-needs-erp, next: [out]}\n",
    )
    error = refused(source, registry)
    assert error.line == 6
    assert "node type 'test-needs-erp' cannot be built: KeyError('ERP_URL')" in error.reason


def test_a_file_cannot_borrow_the_imports_of_another(tmp_path: Path) -> None:
    """Checked against one registry, a file whose custom node needs an import it lacks loaded when
    a file before it had the import, and was refused when it came first."""
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(
        GOOD.replace("name: sample", "name: other").replace("imports: [tests.runtime.sample_nodes]\n", "")
    )
    with pytest.raises(TopologyError) as refused_dir:
        load_topology_dir(tmp_path, default_registry())
    assert str(refused_dir.value).startswith(f"{tmp_path / 'b.yaml'}:5: unknown node type 'test-emit-items'")
