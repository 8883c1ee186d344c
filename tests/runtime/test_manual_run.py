"""A manual run says whose install its user is when the topology does not."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from worker.catalog import TopologyCatalog
from worker.envelope import H, Message
from worker.registry import default_registry
from worker.starter import ApplicationNeeded, run_manual
from worker.topics import TopicNames
from worker.topology import parse_topology

SOURCE = """\
name: detail
{application}start:
  - manual: true
nodes:
  detail: {{node: shoptet-get-order-detail, next: [out]}}
  out: {{sink: detail.out}}
"""


class Sender:
    """A Starter that keeps what it would publish."""

    def __init__(self, *sources: str) -> None:
        registry = default_registry()
        self.topics = TopicNames("t")
        self.catalog = TopologyCatalog(registry)
        self.metrics = None
        self.sent: list[tuple[str, Message]] = []
        for source in sources:
            self.catalog.add_local(parse_topology(source, registry=registry), True)

    async def send(self, topic: str, message: Message) -> asyncio.Future[Any]:
        self.sent.append((topic, message))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_a_topology_naming_no_application_needs_one_for_a_node_that_needs_an_install() -> None:
    """Without it the start message had no application header, went to trash, and no replay could
    give it one."""
    sender = Sender(SOURCE.format(application=""))
    with pytest.raises(ApplicationNeeded, match="names no application"):
        await run_manual(sender, "detail", user="shop", body={"code": "1"})
    assert sender.sent == []

    started = await run_manual(sender, "detail", user="shop", body={"code": "1"}, application="shoptet")
    assert started.headers[H.APPLICATION] == "shoptet"
    assert [topic for topic, _ in sender.sent] == ["t.node.shoptet-get-order-detail", "t.processes"]


class FlakySender(Sender):
    """Its broker does not acknowledge the first send to each of ``failing`` topics."""

    def __init__(self, *sources: str, failing: set[str]) -> None:
        super().__init__(*sources)
        self.failing = failing

    async def send(self, topic: str, message: Message) -> asyncio.Future[Any]:
        ack = await super().send(topic, message)
        if topic in self.failing:
            self.failing.discard(topic)
            ack = asyncio.get_running_loop().create_future()
            ack.set_exception(KafkaTimeoutError())
        return ack


@pytest.mark.parametrize("failing", ["t.processes", "t.node.shoptet-get-order-detail"])
async def test_a_start_the_broker_half_took_is_completed_not_left_half(failing: str) -> None:
    """A message without its start record was never announced finished; a start record without its
    message stayed in flight for ever (and the caller's retry started a second process)."""
    sender = FlakySender(SOURCE.format(application="application: shoptet\n"), failing={failing})
    started = await run_manual(sender, "detail", user="shop", body={"code": "1"})
    topics = [topic for topic, _ in sender.sent]
    assert sorted(topics) == sorted(["t.node.shoptet-get-order-detail", "t.processes", failing])
    assert all(m.process_id == started.process_id for _, m in sender.sent if m.headers)  # one process


async def test_a_start_the_broker_took_none_of_is_refused_and_not_sent_again() -> None:
    both = {"t.processes", "t.node.shoptet-get-order-detail"}
    sender = FlakySender(SOURCE.format(application="application: shoptet\n"), failing=set(both))
    with pytest.raises(KafkaTimeoutError):
        await run_manual(sender, "detail", user="shop", body={"code": "1"})
    assert sorted(topic for topic, _ in sender.sent) == sorted(both)


async def test_a_manual_run_for_another_application_than_the_topologys_is_refused() -> None:
    sender = Sender(SOURCE.format(application="application: shoptet-premium\n"))
    with pytest.raises(ApplicationNeeded, match="serves shoptet-premium, not shoptet"):
        await run_manual(sender, "detail", user="shop", body={}, application="shoptet")
    started = await run_manual(sender, "detail", user="shop", body={})
    assert started.headers[H.APPLICATION] == "shoptet-premium"


async def test_a_deployed_topology_this_shell_cannot_load_is_named_as_such() -> None:
    """Run from a shell without the custom node's module on its path, it said "not deployed or
    disabled" while `topology list` showed it deployed and enabled."""
    import json

    from worker.starter import TopologyNotRunnable

    sender = Sender()
    source = SOURCE.format(application="imports: [no_such_module.nodes]\n")
    record = {"name": "detail", "version": "v1", "source": source}
    sender.catalog.apply("version:detail:v1", json.dumps(record).encode())
    pointer = {"name": "detail", "version": "v1", "enabled": True, "deployed_at": ""}
    sender.catalog.apply("current:detail", json.dumps(pointer).encode())
    with pytest.raises(TopologyNotRunnable, match="deployed, but its version cannot be loaded here"):
        await run_manual(sender, "detail", user="shop", body={})


async def test_every_node_that_needs_an_install_asks_for_an_application() -> None:
    """A custom start node that needs no install, then the order detail: the check looked at the
    start node only, and the detail node trashed the message."""
    mixed = """\
name: detail
imports: [tests.runtime.sample_nodes]
start:
  - manual: true
nodes:
  map: {node: test-passthrough, next: [detail]}
  detail: {node: shoptet-get-order-detail, next: [out]}
  out: {sink: detail.out}
"""
    sender = Sender(mixed)
    with pytest.raises(ApplicationNeeded, match="its node 'detail' needs an install"):
        await run_manual(sender, "detail", user="shop", body={})
    with pytest.raises(ApplicationNeeded, match="unknown application 'premium'"):
        await run_manual(sender, "detail", user="shop", body={}, application="premium")


async def test_a_deployed_version_this_shell_cannot_load_is_not_run_as_the_one_before() -> None:
    import json

    from worker.starter import TopologyNotRunnable

    sender = Sender(SOURCE.format(application="application: shoptet-premium\n"))
    source = SOURCE.format(application="imports: [no_such_module.nodes]\n")
    sender.catalog.apply(
        "version:detail:v2", json.dumps({"name": "detail", "version": "v2", "source": source}).encode()
    )
    pointer = {"name": "detail", "version": "v2", "enabled": True, "deployed_at": ""}
    sender.catalog.apply("current:detail", json.dumps(pointer).encode())
    assert sender.catalog.active("detail") is not None  # the worker keeps running the one before
    with pytest.raises(TopologyNotRunnable, match="cannot be loaded here"):
        await run_manual(sender, "detail", user="shop", body={}, strict=True)  # the CLI
    started = await run_manual(sender, "detail", user="shop", body={})  # a worker (HTTP): as it runs
    assert started.headers[H.TOPOLOGY_VERSION] != "v2"


async def test_a_run_for_a_user_without_the_install_is_refused_before_anything_is_sent() -> None:
    """A mistyped --user printed a process id, and the message went to trash at its first node."""
    from worker.starter import InstallMissing
    from worker.store import Install

    installs = {("shop", "shoptet"): Install(user="shop", application="shoptet")}
    disabled = Install(user="paused", application="shoptet", enabled=False)
    installs[("paused", "shoptet")] = disabled

    async def lookup(user: str, application: str) -> Install | None:
        return installs.get((user, application))

    sender = Sender(SOURCE.format(application="application: shoptet\n"))
    with pytest.raises(InstallMissing, match="no shoptet install for user 'shpo'"):
        await run_manual(sender, "detail", user="shpo", body={}, installs=lookup)
    with pytest.raises(InstallMissing, match="is disabled"):
        await run_manual(sender, "detail", user="paused", body={}, installs=lookup)
    assert sender.sent == []
    await run_manual(sender, "detail", user="shop", body={}, installs=lookup)
    assert len(sender.sent) == 2


INSTALLED = """\
name: onboard
application: {application}
imports: [{module}]
start:
  - installed: true
nodes:
  first: {{node: shoptet-get-eshop-info, next: [out]}}
  out: {{sink: onboard.out}}
"""


def test_install_add_names_only_the_installed_starts_that_did_not_run() -> None:
    """It named every deployed topology it could not read: another application's, one with no
    `installed` start, and one whose earlier version it had just started."""
    import json

    from worker.starter import installed_starts, unread_installed_starts

    loadable = INSTALLED.format(application="shoptet-premium", module="tests.runtime.sample_nodes")
    sender = Sender(loadable)
    running = sender.catalog.current["onboard"].version

    def deploy(name: str, version: str, source: str) -> None:
        record = {"name": name, "version": version, "source": source}
        sender.catalog.apply(f"version:{name}:{version}", json.dumps(record).encode())
        pointer = {"name": name, "version": version, "enabled": True, "deployed_at": ""}
        sender.catalog.apply(f"current:{name}", json.dumps(pointer).encode())

    unreadable = INSTALLED.format(application="shoptet-premium", module="no_such_module.nodes")
    deploy("onboard", "v-new", unreadable)  # its earlier version still runs here
    deploy("elsewhere", "v1", unreadable.replace("onboard", "elsewhere"))  # nothing of it runs here
    deploy(
        "addon-only",
        "v1",
        INSTALLED.format(application="shoptet", module="no_such_module.nodes").replace("onboard", "addon-only"),
    )
    deploy(
        "no-installed", "v1", unreadable.replace("onboard", "no-installed").replace("installed: true", "manual: true")
    )

    one_start = unreadable.replace("onboard", "alone").replace(
        "start:\n  - installed: true", "start: {installed: true}"
    )
    assert "start: {installed: true}" in one_start
    deploy("alone", "v1", one_start)  # one start written alone, not in a list

    from worker.store import Install

    install = Install(user="shop", application="shoptet-premium")
    assert [(tv.name, tv.version) for tv, _ in installed_starts(sender, install)] == [("onboard", running)]
    assert unread_installed_starts(sender, install) == ["alone", "elsewhere"]
