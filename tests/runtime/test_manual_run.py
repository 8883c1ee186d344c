"""A manual run says whose install its user is when the topology does not."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

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
    assert [topic for topic, _ in sender.sent] == ["t.processes", "t.node.shoptet-get-order-detail"]


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
