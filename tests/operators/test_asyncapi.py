"""The AsyncAPI document: every topic the worker uses, structurally valid, served and written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from worker.app import Worker
from worker.asyncapi import HEADER_DOCS, build_asyncapi
from worker.cli import app
from worker.envelope import REQUIRED_HEADERS, H
from worker.http.app import create_http_app
from worker.registry import default_registry
from worker.settings import Settings
from worker.topics import TopicNames
from worker.topology import load_topology_dir

TOPOLOGY = Path(__file__).parents[2] / "topology"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    registry = default_registry()
    return build_asyncapi(Settings(kafka_topic_prefix="acme"), registry, load_topology_dir(TOPOLOGY, registry))


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        assert part in node, f"dangling $ref {ref}"
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _deref(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    return _resolve(doc, node["$ref"]) if "$ref" in node else node


def test_structure_and_references(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] and document["info"]["version"]
    assert document["servers"]
    refs = _refs(document)
    assert refs
    for ref in refs:
        _resolve(document, ref)
    for op_id, op in document["operations"].items():
        assert op["action"] in ("send", "receive"), op_id
        channel_ref = op["channel"]["$ref"]
        for m in op["messages"]:  # AsyncAPI 3: an operation's messages are its channel's messages
            assert m["$ref"].startswith(channel_ref + "/messages/"), op_id
    used = {op["channel"]["$ref"].rsplit("/", 1)[1] for op in document["operations"].values()}
    assert used == set(document["channels"])


def test_every_message_has_headers_payload_and_key(document: dict[str, Any]) -> None:
    schemas = [*document["components"]["schemas"].values()]
    for message_id, message in document["components"]["messages"].items():
        headers = _deref(document, message["headers"])
        assert headers["type"] == "object" and "properties" in headers, message_id
        assert "payload" in message and message["contentType"] == "application/json"
        assert message["bindings"]["kafka"]["key"]["type"] == "string"
        schemas += [headers, _deref(document, message["payload"])]
    for schema in schemas:
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_node_type_has_its_topic_with_orchesty_headers(document: dict[str, Any]) -> None:
    topics = TopicNames("acme")
    by_address = {c["address"]: c for c in document["channels"].values()}
    names = default_registry().names()
    assert len(names) >= 20
    for name in names:
        channel = by_address[topics.node(name)]
        assert channel["bindings"]["kafka"]["topic"] == topics.node(name)
        [ref] = channel["messages"].values()
        message = _resolve(document, ref["$ref"])
        headers = _deref(document, message["headers"])
        assert set(REQUIRED_HEADERS) <= set(headers["required"])
        assert {H.USER, H.APPLICATION, H.CURSOR, H.ROOT_PROCESS_ID} <= set(headers["properties"])
        assert H.RETRY_TARGET_TOPIC not in headers["properties"]  # only on the retry topic
        assert "user" in message["bindings"]["kafka"]["key"]["description"]
        assert message["correlationId"]["location"] == "$message.header#/correlation-id"


def test_runtime_topics_sinks_and_inbound_topics(document: dict[str, Any]) -> None:
    topics = TopicNames("acme")
    by_address = {c["address"]: c for c in document["channels"].values()}
    for topic in (topics.retry, topics.control, topics.processes, topics.process_events):
        assert topic in by_address
    retry = _resolve(document, next(iter(by_address[topics.retry]["messages"].values()))["$ref"])
    assert {H.RETRY_TARGET_TOPIC, H.RETRY_DUE_AT} <= set(_deref(document, retry["headers"])["required"])
    assert by_address[topics.control]["bindings"]["kafka"]["topicConfiguration"] == {"cleanup.policy": ["compact"]}
    ledger = by_address[topics.processes]["messages"]
    assert {m.rsplit(".", 1)[1] for m in ledger} == {"start", "handled", "finished"}

    tvs = load_topology_dir(TOPOLOGY)
    sinks = {s.sink for tv in tvs for s in tv.topology.nodes.values() if s.sink}
    inbound = {s.topic for tv in tvs for s in tv.topology.start if s.topic}
    assert sinks and inbound
    assert sinks | inbound <= set(by_address)
    ops = {(op["action"], op["channel"]["$ref"].rsplit("/", 1)[1]) for op in document["operations"].values()}
    assert all(("send", f"sink.{t}") in ops for t in sinks)
    assert all(("receive", f"inbound.{t}") in ops for t in inbound)
    for topic in inbound:  # worker/inbound.py: the `user` header names the install, else the key
        [ref] = document["channels"][f"inbound.{topic}"]["messages"].values()
        assert H.USER in _resolve(document, ref["$ref"])["headers"]["properties"]


def test_every_header_is_documented() -> None:
    declared = {v for k, v in vars(H).items() if k.isupper() and isinstance(v, str)}
    assert declared == set(HEADER_DOCS)


def test_docs_command_writes_the_document(tmp_path: Path, document: dict[str, Any]) -> None:
    out = tmp_path / "asyncapi.json"
    env = {"KAFKA_TOPIC_PREFIX": "acme", "TOPOLOGY_DIR": str(TOPOLOGY)}
    result = CliRunner().invoke(app, ["docs", "--output", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == document
    printed = CliRunner().invoke(app, ["docs"], env=env)
    assert printed.exit_code == 0 and json.loads(printed.stdout) == document


def test_http_app_serves_the_document(tmp_path: Path, document: dict[str, Any]) -> None:
    settings = Settings(kafka_topic_prefix="acme", topology_dir=TOPOLOGY, database_url=f"sqlite:///{tmp_path}/s.db")
    with TestClient(create_http_app(Worker(settings))) as client:
        response = client.get("/asyncapi.json")
    assert response.status_code == 200
    assert response.json() == document


def test_running_worker_documents_what_is_deployed(tmp_path: Path) -> None:
    """Once started, the served document follows the control topic, not the local directory."""
    from types import SimpleNamespace

    from worker.catalog import TopologyCatalog
    from worker.topology import load_topology_file

    settings = Settings(kafka_topic_prefix="acme", topology_dir=TOPOLOGY, database_url=f"sqlite:///{tmp_path}/s.db")
    worker = Worker(settings)
    catalog = TopologyCatalog(worker.registry)
    catalog.add_local(load_topology_file(TOPOLOGY / "stock-update.yaml", worker.registry))
    worker.runtime = SimpleNamespace(catalog=catalog)  # type: ignore[assignment]
    from worker.asyncapi import worker_asyncapi

    channels = worker_asyncapi(worker)["channels"]
    assert "inbound.shoptet.stock-movements" in channels
    # stock-update's only sink: Shoptet's answers
    assert [c for c in channels if c.startswith("sink.")] == ["sink.shoptet.stock-movements.results"]
