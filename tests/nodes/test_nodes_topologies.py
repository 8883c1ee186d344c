"""The shipped topology files load with the real node registry and wire the intended processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.registry import NodeRegistry, default_registry
from worker.topology import Topology, load_topology_dir

TOPOLOGY_DIR = Path(__file__).resolve().parents[2] / "topology"


@pytest.fixture(scope="module")
def registry() -> NodeRegistry:
    return default_registry()


@pytest.fixture(scope="module")
def topologies(registry: NodeRegistry) -> dict[str, Topology]:
    return {tv.name: tv.topology for tv in load_topology_dir(TOPOLOGY_DIR, registry)}


def chain(topology: Topology, start: str) -> list[str]:
    """Node types (or ``sink:topic``) along the first-follower path from ``start``."""
    out, current = [], start
    while True:
        spec = topology.nodes[current]
        out.append(spec.node or f"sink:{spec.sink}")
        if not spec.next:
            return out
        current = spec.next[0]


def test_every_file_is_named_after_its_topology(topologies: dict[str, Topology]) -> None:
    assert {p.stem for p in TOPOLOGY_DIR.glob("*.yaml")} == set(topologies)
    assert set(topologies) >= {
        "order-sync",
        "order-import",
        "product-sync",
        "order-snapshot",
        "order-webhook",
        "order-status-update",
        "stock-update",
        "webhooks-subscribe",
        "webhooks-unsubscribe",
        "eshop-reference-data",
    }


def test_every_builtin_node_is_used(topologies: dict[str, Topology], registry: NodeRegistry) -> None:
    used = {node for t in topologies.values() for node in t.node_types()}
    assert used == set(registry.names())


@pytest.mark.parametrize(
    ("name", "trigger", "expected"),
    [
        ("order-sync", "cron", ["shoptet-get-order-changes-list", "shoptet-get-order-detail", "sink:shoptet.orders"]),
        ("order-import", "manual", ["shoptet-get-orders-list", "shoptet-get-order-detail", "sink:shoptet.orders"]),
        (
            "product-sync",
            "cron",
            ["shoptet-get-product-changes-list", "shoptet-get-product-detail", "sink:shoptet.products"],
        ),
        ("order-snapshot", "manual", ["shoptet-get-all-orders"]),
        (
            "order-snapshot",
            "webhook",
            ["shoptet-job-finished-webhook", "shoptet-parse-json-lines", "sink:shoptet.orders.snapshot"],
        ),
        ("order-webhook", "webhook", ["shoptet-get-order-detail", "sink:shoptet.orders"]),
        ("order-sets", "topic", ["shoptet-product-detail-with-set", "sink:shoptet.orders.expanded"]),
        ("stock-update", "topic", ["shoptet-update-stock-movements", "sink:shoptet.stock-movements.results"]),
        ("webhooks-subscribe", "manual", ["shoptet-subscribe-webhooks"]),
        ("product-snapshot", "manual", ["shoptet-get-all-products"]),
        (
            "product-import",
            "manual",
            ["shoptet-get-products-list", "shoptet-get-product-detail", "sink:shoptet.products"],
        ),
        ("webhooks-unsubscribe", "manual", ["shoptet-unsubscribe-webhooks"]),
    ],
)
def test_process_chain(topologies: dict[str, Topology], name: str, trigger: str, expected: list[str]) -> None:
    topology = topologies[name]
    starts = [s for s in topology.start if getattr(s, trigger)]
    assert starts, f"{name} has no {trigger} start"
    assert chain(topology, topology.start_node(starts[0])) == expected


def test_webhook_events(topologies: dict[str, Topology]) -> None:
    assert topologies["order-webhook"].webhook_events() == {"order:create", "order:update"}
    assert topologies["order-snapshot"].webhook_events() == {"job:finished"}


def test_snapshot_processes_split_job_finished_by_endpoint(topologies: dict[str, Topology]) -> None:
    endpoints = {
        name: topologies[name].nodes["finished"].options["endpoints"] for name in ("order-snapshot", "product-snapshot")
    }
    assert endpoints == {"order-snapshot": ["/api/orders/snapshot"], "product-snapshot": ["/api/products/snapshot"]}


def test_inbound_topics_reach_the_writers(topologies: dict[str, Topology]) -> None:
    topology = topologies["order-status-update"]
    targets = {s.topic: topology.nodes[topology.start_node(s)].node for s in topology.start}
    assert targets == {
        "shoptet.order-status-updates": "shoptet-update-order-status",
        "shoptet.order-remarks": "shoptet-update-remark-for-order",
    }


def test_reference_data_reaches_the_sink_from_all_four_readers(topologies: dict[str, Topology]) -> None:
    topology = topologies["eshop-reference-data"]
    start = topology.start_node(topology.start[0])
    reached = {start} | set(topology.nodes[start].next)
    readers = {topology.nodes[n].node for n in reached if topology.nodes[n].node}
    assert readers == {
        "shoptet-get-eshop-info",
        "shoptet-get-list-of-stocks",
        "shoptet-get-payment-methods",
        "shoptet-get-shipping-methods",
    }
    for node_id in reached:
        spec = topology.nodes[node_id]
        if spec.node:
            assert "out" in spec.next, f"{node_id} does not publish to the sink"
    assert topology.nodes["out"].sink == "shoptet.reference"


def test_order_sets_reads_what_the_order_topologies_publish(topologies: dict[str, Topology]) -> None:
    sinks = {
        spec.sink
        for name in ("order-sync", "order-import", "order-webhook")
        for spec in topologies[name].nodes.values()
    }
    assert sinks - {None} == {"shoptet.orders"}
    assert [s.topic for s in topologies["order-sets"].start] == ["shoptet.orders"]
