"""`topology deploy` refuses a bad file and keeps the running version; /readyz waits for consumers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.runtime.helpers import settings_env
from worker.app import Worker
from worker.cli import app
from worker.consumer import revoke_wait_seconds
from worker.control import control_client
from worker.http.app import create_http_app
from worker.settings import Settings

runner = CliRunner()

GOOD = """\
name: deployable
imports: [tests.runtime.sample_nodes]
start:
  - manual: true
nodes:
  emit: {node: test-emit-items, next: [out]}
  out: {sink: deployable.out}
"""


async def _topics(settings: Settings) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


async def _current_version(settings: Settings) -> str | None:
    async with control_client(settings) as control:
        deployment = control.catalog.current.get("deployable")
        return deployment.version if deployment else None


async def test_bad_file_is_refused_with_its_line_and_the_running_version_stays(
    worker_settings: Settings, tmp_path: Path
) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(GOOD.replace("next: [out]", "next: [nowhere]"))
    env = settings_env(worker_settings)

    deployed = await asyncio.to_thread(runner.invoke, app, ["topology", "deploy", str(good)], env=env)
    assert deployed.exit_code == 0, deployed.output
    version = await _current_version(worker_settings)
    assert version is not None and f"deployable@{version}" in deployed.output
    assert "deployable.out" in await _topics(worker_settings)  # its sink: a cluster may not auto-create

    refused = await asyncio.to_thread(runner.invoke, app, ["topology", "deploy", str(good), str(bad)], env=env)
    assert refused.exit_code == 1
    assert f"{bad}:6: node 'emit' has an edge to missing node 'nowhere'" in refused.output
    assert await _current_version(worker_settings) == version  # nothing deployed, not even the good file

    listed = await asyncio.to_thread(runner.invoke, app, ["topology", "list"], env=env)
    assert listed.exit_code == 0 and "deployable" in listed.output and version in listed.output


async def test_deploying_a_disabled_topology_keeps_it_disabled(worker_settings: Settings, tmp_path: Path) -> None:
    """A fix deployed to a topology an operator stopped is not the decision to run it again."""
    first, fixed = tmp_path / "first.yaml", tmp_path / "fixed.yaml"
    first.write_text(GOOD)
    fixed.write_text(GOOD.replace("next: [out]}", "next: [out], concurrency: 2}"))
    env = settings_env(worker_settings)

    async def cli(*args: str) -> str:
        result = await asyncio.to_thread(runner.invoke, app, ["topology", *args], env=env)
        assert result.exit_code == 0, result.output
        return result.output

    await cli("deploy", str(first))
    before = await _current_version(worker_settings)
    await cli("disable", "deployable")
    output = await cli("deploy", str(fixed))
    assert "disabled: `shoptet-worker topology enable deployable` runs it" in output
    async with control_client(worker_settings) as control:
        deployment = control.catalog.current["deployable"]
    assert not deployment.enabled
    assert deployment.version != before
    assert "disabled" in await cli("list")


def test_two_files_of_one_topology_name_are_refused(tmp_path: Path) -> None:
    """``up`` refuses such a directory; ``validate`` passed it and ``deploy`` let the last file win."""
    from worker.topology import TopologyError, load_topology_dir

    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD.replace("next: [out]}", "next: [out], concurrency: 2}"))
    files = [str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]
    for command in ("validate", "deploy"):
        result = runner.invoke(app, ["topology", command, *files])
        assert result.exit_code == 1, result.output
        assert f"{files[1]}:1: topology name 'deployable' is used by another file ({files[0]})" in result.output
    with pytest.raises(TopologyError, match="is used by another file"):
        load_topology_dir(tmp_path)


async def test_readiness_is_true_only_once_every_consumer_has_joined(worker_settings: Settings) -> None:
    worker = Worker(worker_settings, node_names=["test-emit-items", "test-passthrough"])
    http_app = create_http_app(worker)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=http_app), base_url="http://w") as client:
        before = await client.get("/readyz")
        assert before.status_code == 503
        assert (await client.get("/healthz")).status_code == 200
        from worker.registry import default_registry
        from worker.topology import parse_topology

        await worker.start(deploy=[parse_topology(GOOD, registry=default_registry())])
        try:
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            consumers = ready.json()["consumers"]
            assert {"test-emit-items", "test-passthrough", "retry"} <= set(consumers)
            assert all(consumers.values())
            assert all(c.consumer.assignment() for c in worker.consumers)  # each has its partitions
            # the retry forwarder's too: at 4 s, a forward acknowledged later in a rebalance stayed
            # uncommitted, and the partition's next owner forwarded it again (the node ran twice)
            assert {c.name: c.revoke_wait for c in worker.consumers} == {
                c.name: revoke_wait_seconds(worker_settings) for c in worker.consumers
            }
        finally:
            await worker.stop()


@asynccontextmanager
async def started_with_http(settings: Settings) -> AsyncIterator[tuple[Worker, httpx.AsyncClient]]:
    """A worker running GOOD, and a client of its HTTP app; stopped on the way out."""
    from worker.registry import default_registry
    from worker.topology import parse_topology

    worker = Worker(settings, node_names=["test-emit-items", "test-passthrough"])
    http_app = create_http_app(worker)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=http_app), base_url="http://w") as client:
        await worker.start(deploy=[parse_topology(GOOD, registry=default_registry())])
        try:
            yield worker, client
        finally:
            await worker.stop()


async def test_a_consumer_loop_that_ended_fails_health_and_readiness(worker_settings: Settings) -> None:
    """Both answered 200 for good after start-up: a worker that read nothing any more was never
    restarted by its supervisor."""
    async with started_with_http(worker_settings) as (worker, client):
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        [consumer] = [c for c in worker.consumers if c.name == "test-passthrough"]

        async def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("a bug in the fetch loop")

        consumer.consumer.getmany = broken  # type: ignore[method-assign]
        for _ in range(50):  # the loop's current fetch (500 ms at most) ends first
            if consumer.failure is not None:
                break
            await asyncio.sleep(0.1)

        health = await client.get("/healthz")
        assert health.status_code == 503
        [problem] = health.json()["problems"]
        assert "test-passthrough" in problem and "a bug in the fetch loop" in problem
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["consumers"]["test-passthrough"] is False
    # the other loops ended by the stop: not a problem
    assert [c.name for c in worker.consumers if c.failure is not None] == ["test-passthrough"]


async def test_up_stops_with_the_problems_once_the_worker_has_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker import serve

    class Failing:
        calls = 0

        def problems(self) -> list[str]:
            self.calls += 1
            return ["the embedded broker exited (code -9)"] if self.calls >= 3 else []

    monkeypatch.setattr(serve, "WATCH_SECONDS", 0.01)
    stop = asyncio.Event()
    found = await asyncio.wait_for(serve._watch(Failing(), stop), 5)  # type: ignore[arg-type]
    assert found == ["the embedded broker exited (code -9)"] and stop.is_set()


async def test_an_embedded_broker_that_exited_is_a_problem(worker_settings: Settings) -> None:
    from worker.broker import EmbeddedBroker

    worker = Worker(worker_settings, node_names=[])
    async with EmbeddedBroker() as broker:
        worker.broker = broker
        assert worker.problems() == []
        assert broker.process is not None
        broker.process.kill()
        broker.process.wait()
        assert worker.problems() == [f"the embedded broker exited (code {broker.process.returncode})"]


async def test_a_restart_neither_re_enables_nor_rolls_back_what_operators_changed(
    worker_settings: Settings, tmp_path: Path
) -> None:
    """``up`` deploys its topology files at start; one already deployed must leave the pointer alone:
    a disabled topology stays disabled, and a version deployed since from the CLI stays current."""
    from worker.catalog import publish_deployment, publish_enabled
    from worker.registry import default_registry
    from worker.topology import parse_topology

    registry = default_registry()
    on_disk = parse_topology(GOOD, registry=registry)
    newer = parse_topology(GOOD.replace("deployable.out", "deployable.out2"), registry=registry)

    async def start_and_stop(change: str) -> None:
        worker = Worker(worker_settings, node_names=["test-emit-items"])
        await worker.start(deploy=[on_disk])
        try:
            rt = worker.rt
            if change == "disable":
                await publish_enabled(rt.producer, rt.topics.control, rt.catalog.current["deployable"], False)
            elif change == "deploy newer":
                await publish_deployment(rt.producer, rt.topics.control, newer)
        finally:
            await worker.stop()

    await start_and_stop("disable")
    await start_and_stop("nothing")  # a restart with the same file
    async with control_client(worker_settings) as control:
        assert control.catalog.current["deployable"].enabled is False
    on_disk = parse_topology(GOOD.replace("deployable.out", "deployable.changed"), registry=registry)
    await start_and_stop("nothing")  # a restart with a changed file (a new image): deployed, disabled
    async with control_client(worker_settings) as control:
        current = control.catalog.current["deployable"]
        assert (current.version, current.enabled) == (on_disk.version, False)
    await start_and_stop("deploy newer")
    await start_and_stop("nothing")
    assert await _current_version(worker_settings) == newer.version


async def test_a_typo_in_nodes_stops_the_start_before_anything_is_deployed(worker_settings: Settings) -> None:
    from worker.app import UnknownNodeType
    from worker.registry import default_registry
    from worker.topology import parse_topology

    worker = Worker(worker_settings, node_names=["test-emit-itemz"])
    try:
        with pytest.raises(UnknownNodeType, match="test-emit-itemz"):
            await worker.start(deploy=[parse_topology(GOOD, registry=default_registry())])
    finally:
        await worker.stop()
    assert await _current_version(worker_settings) is None


async def test_readiness_goes_false_while_the_broker_does_not_answer_and_back(
    worker_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With its broker gone, /readyz answered 200 for as long as the outage lasted, and a load
    balancer kept sending Shoptet's webhooks to an instance that could only answer 503."""
    from worker import app as app_module

    monkeypatch.setattr(app_module, "BROKER_CHECK_SECONDS", 0.2)
    async with started_with_http(worker_settings) as (worker, client):
        assert (await client.get("/readyz")).status_code == 200
        client_of_producer = worker.rt.producer.client

        def unanswered() -> asyncio.Future[bool]:
            return asyncio.get_running_loop().create_future()  # the broker never answers

        with monkeypatch.context() as gone:
            gone.setattr(client_of_producer, "force_metadata_update", unanswered)
            down = await client.get("/readyz")
            assert down.status_code == 503
            assert down.json()["problems"] == ["the broker does not answer"]
            assert (await client.get("/healthz")).status_code == 200  # a restart would not help
        assert (await client.get("/readyz")).status_code == 200  # back by itself
