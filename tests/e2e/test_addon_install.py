"""An e-shop installs the addon: the install callback stores it, and the topologies with an
``installed`` start run for it, so its webhooks get registered with nobody running anything."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from pydantic import SecretStr

from simulator.config import SimulatorConfig
from simulator.server import SimulatorServer
from tests.support import settings_for_test
from worker.app import Worker
from worker.http.app import create_http_app
from worker.settings import Settings
from worker.topology import TopologyVersion, load_topology_file, parse_topology

pytestmark = pytest.mark.e2e

TOPOLOGY_DIR = Path(__file__).parents[2] / "topology"
REDIRECT = "https://worker.test/shoptet/install"
PUBLIC = "https://worker.test"


def for_the_addon(path: Path, worker: Worker) -> TopologyVersion:
    """A shipped topology as an addon developer deploys it: the `shoptet` application, its own name."""
    data = yaml.safe_load(load_topology_file(path, worker.registry).source)
    data["name"] += "-addon"
    data["application"] = "shoptet"
    return parse_topology(yaml.safe_dump(data, sort_keys=False), f"{path.name} (addon)", worker.registry)


async def webhooks_registered(sim: SimulatorServer, eshop_id: int) -> None:
    deadline = time.monotonic() + 60
    while not sim.state.webhooks.registered(eshop_id):
        assert time.monotonic() < deadline, "the new install's webhooks were never registered"
        await asyncio.sleep(0.2)


def addon_settings(kafka_bootstrap: str, tmp_path: Path, sim: SimulatorServer) -> Settings:
    """A worker configured for the simulator's OAuth addon, its install URL and public URL."""
    return settings_for_test(
        kafka_bootstrap,
        tmp_path,
        shoptet_api_url=sim.url,
        shoptet_oauth_server_url=sim.url,
        shoptet_oauth_client_id=sim.config.oauth_client_id,
        shoptet_oauth_client_secret=SecretStr(sim.config.oauth_client_secret),
        shoptet_oauth_redirect_url=REDIRECT,
        public_base_url=PUBLIC,
    )


async def oauth_code(sim: SimulatorServer) -> str:
    """A one-use install code, as Shoptet hands the addon's install URL."""
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(f"{sim.url}/_sim/oauth/codes", json={"redirectUri": REDIRECT})
    code: str = answer.json()["code"]
    return code


@asynccontextmanager
async def worker_http(worker: Worker) -> AsyncIterator[httpx.AsyncClient]:
    """The worker's HTTP app, run as uvicorn runs it (its lifespan hands the runtime to the routes)."""
    app = create_http_app(worker)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker") as client,
    ):
        yield client


async def test_an_addon_install_registers_its_webhooks_by_itself(kafka_bootstrap: str, tmp_path: Path) -> None:
    async with SimulatorServer(SimulatorConfig(orders=5, products=5)) as sim:
        settings = addon_settings(kafka_bootstrap, tmp_path, sim)
        worker = Worker(settings, node_names=["shoptet-subscribe-webhooks"])
        files = ("webhooks-subscribe.yaml", "order-webhook.yaml")
        topologies = [for_the_addon(TOPOLOGY_DIR / f, worker) for f in files]
        premium_only = load_topology_file(TOPOLOGY_DIR / "order-snapshot.yaml", worker.registry)  # job:finished
        await worker.start(deploy=[*topologies, premium_only])
        try:
            code = await oauth_code(sim)
            async with worker_http(worker) as client:
                response = await client.get("/shoptet/install", params={"code": code})
            assert response.status_code == 200, response.text

            eshop_id = sim.state.eshops[0].eshop_id
            await webhooks_registered(sim, eshop_id)
        finally:
            await worker.stop()
    registered = sim.state.webhooks.registered(eshop_id)
    # the addon's topologies' events, not those of premium topologies (Shoptet would call for nothing)
    assert {w.event for w in registered} == topologies[1].topology.webhook_events()
    assert "job:finished" in premium_only.topology.webhook_events() - topologies[1].topology.webhook_events()
    assert {w.url for w in registered} == {f"{PUBLIC}/webhooks/shoptet/shoptet"}


async def test_an_addon_install_during_a_broker_outage_registers_its_webhooks_once_it_is_back(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `installed` starts were given up after the answer's 10 s: a broker away for a moment,
    and the new shop never had its webhooks registered, silently."""
    async with SimulatorServer(SimulatorConfig(orders=5, products=5)) as sim:
        settings = addon_settings(kafka_bootstrap, tmp_path, sim).model_copy(
            update={"webhook_publish_timeout_seconds": 0.5}  # the answer goes out while it is still away
        )
        worker = Worker(settings, node_names=["shoptet-subscribe-webhooks"])
        files = ("webhooks-subscribe.yaml", "order-webhook.yaml")  # the second: the events to register
        await worker.start(deploy=[for_the_addon(TOPOLOGY_DIR / f, worker) for f in files])
        try:
            send, refused = worker.rt.send, []

            async def away_twice(topic: str, message: object) -> object:
                if topic.endswith(".node.shoptet-subscribe-webhooks") and len(refused) < 2:
                    refused.append(topic)
                    raise ConnectionError("broker unreachable")
                return await send(topic, message)  # type: ignore[arg-type]

            monkeypatch.setattr(worker.rt, "send", away_twice)
            code = await oauth_code(sim)
            async with worker_http(worker) as client:
                response = await client.get("/shoptet/install", params={"code": code})
                assert response.status_code == 200, response.text
                assert len(refused) == 1  # answered before the broker was back

                await webhooks_registered(sim, sim.state.eshops[0].eshop_id)
            assert len(refused) == 2
        finally:
            await worker.stop()


async def test_install_add_runs_the_installed_starts_and_says_so(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The premium path: `install add` stores the token, then starts the deployed webhooks-subscribe."""
    from typer.testing import CliRunner

    from tests.runtime.helpers import settings_env
    from worker.cli.install import install_app
    from worker.settings import get_settings

    async with SimulatorServer(SimulatorConfig(orders=5, products=5)) as sim:
        settings = settings_for_test(kafka_bootstrap, tmp_path, shoptet_api_url=sim.url, public_base_url=PUBLIC)
        worker = Worker(settings, node_names=["shoptet-subscribe-webhooks"])
        files = ("webhooks-subscribe.yaml", "order-webhook.yaml")
        await worker.start(deploy=[load_topology_file(TOPOLOGY_DIR / f, worker.registry) for f in files])
        try:
            for name, value in {**settings_env(settings), "SHOPTET_API_URL": sim.url}.items():
                monkeypatch.setenv(name, value)
            get_settings.cache_clear()
            # deployed from a shell that had its module: this one cannot read it, nor its `installed` start
            unreadable = (
                "name: onboard\napplication: shoptet-premium\nimports: [no_such_module.nodes]\n"
                "start: [{installed: true}]\nnodes:\n  first: {node: custom-onboard}\n"
            )
            control = worker.rt.topics.control
            record = {"name": "onboard", "version": "v1", "source": unreadable}
            await worker.rt.producer.send_and_wait(control, json.dumps(record).encode(), key=b"version:onboard:v1")
            pointer = {"name": "onboard", "version": "v1", "enabled": True, "deployed_at": ""}
            await worker.rt.producer.send_and_wait(control, json.dumps(pointer).encode(), key=b"current:onboard")
            command = ["add", "premium", "--user", "shop", "--token", sim.premium_token()]
            added = await asyncio.to_thread(CliRunner().invoke, install_app, command)
            assert added.exit_code == 0, added.output
            assert "started webhooks-subscribe for shop" in added.output
            # it went unsaid: the onboarding never ran, and nothing told the operator
            assert "their `installed` starts did not run: onboard" in added.output

            eshop_id = sim.state.eshops[0].eshop_id
            await webhooks_registered(sim, eshop_id)
        finally:
            get_settings.cache_clear()
            await worker.stop()


async def test_install_add_without_kafka_stores_the_install_and_says_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from worker.cli.install import install_app
    from worker.settings import get_settings

    monkeypatch.chdir(tmp_path)  # no var/worker.json of a local `up`
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'store.sqlite3'}")
    get_settings.cache_clear()
    try:
        command = ["add", "addon", "--user", "shop", "--eshop-id", "7", "--oauth-token", "oauth-secret"]
        added = await asyncio.to_thread(CliRunner().invoke, install_app, command)
    finally:
        get_settings.cache_clear()
    assert added.exit_code == 0, added.output
    assert "installed shop (shoptet, eshopId 7)" in added.output
    assert "no Kafka to talk to" in added.output
    assert "shoptet-worker run webhooks-subscribe --user shop" in added.output
    assert "oauth-secret" not in added.output


async def test_an_addon_install_without_webhook_topologies_still_verifies_its_lifecycle_events(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Shoptet sends ``addon:uninstall`` whatever the topologies register, signed with the e-shop's
    key; only webhooks-subscribe fetched that key, so without it the uninstall got 401 and the
    uninstalled shop stayed enabled. The install callback fetches it now."""
    from datetime import UTC, datetime

    from tests.ingress.helpers import signed, webhook_body

    async with SimulatorServer(SimulatorConfig(orders=5, products=5)) as sim:
        settings = addon_settings(kafka_bootstrap, tmp_path, sim)
        worker = Worker(settings, node_names=[])
        await worker.start(deploy=[])
        try:
            code = await oauth_code(sim)
            async with worker_http(worker) as client:
                assert (await client.get("/shoptet/install", params={"code": code})).status_code == 200
                eshop = sim.state.eshops[0]
                installed = await worker.rt.store.find_by_eshop(str(eshop.eshop_id), "shoptet")
                assert installed is not None and eshop.signature_key
                assert installed.secrets["webhook_signature_key"] == eshop.signature_key

                now = datetime.now(UTC).isoformat()
                body = webhook_body(eshop.eshop_id, event="addon:uninstall", instance=str(eshop.eshop_id), created=now)
                headers = signed(body, eshop.signature_key)
                response = await client.post("/webhooks/shoptet/shoptet", content=body, headers=headers)
            assert response.status_code == 200, response.text
            assert await worker.rt.store.find_by_eshop(str(eshop.eshop_id), "shoptet") is None
        finally:
            await worker.stop()
