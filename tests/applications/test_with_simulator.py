"""Both applications against the Shoptet simulator over real HTTP (skipped only if it is missing)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from typer.testing import CliRunner

pytest.importorskip("simulator.server", reason="the simulator module is not there yet")

from applications.addon import AddonApplication
from applications.client import ShoptetClient
from applications.premium import PremiumApplication
from simulator.config import SimulatorConfig
from simulator.server import SimulatorServer
from worker.cli.install import install_app
from worker.http.install_callback import router
from worker.limiter import LocalLimiter
from worker.settings import Settings, get_settings
from worker.store import Install
from worker.store.crypto import SecretBox
from worker.store.sql import SqlInstallStore

REDIRECT = "https://worker.test/shoptet/install"
WORKER_SCRIPT = Path(__file__).with_name("token_worker.py")


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(SimulatorConfig(orders=5, products=5)) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def _stats(http: httpx.AsyncClient, sim: SimulatorServer) -> dict[str, object]:
    response = await http.get(f"{sim.url}/_sim/stats")
    response.raise_for_status()
    stats: dict[str, object] = response.json()["accessTokens"]
    return stats


async def _install_addon(sim: SimulatorServer, http: httpx.AsyncClient, store: SqlInstallStore) -> httpx.Response:
    """Shoptet's side of an install: a code, then a call of our install URL with it."""
    code = (await http.post(f"{sim.url}/_sim/oauth/codes", json={"redirectUri": REDIRECT})).json()["code"]
    app = FastAPI()
    app.include_router(router)
    app.state.store, app.state.http = store, http
    app.state.settings = Settings(
        shoptet_oauth_client_id=sim.config.oauth_client_id,
        shoptet_oauth_client_secret=SecretStr(sim.config.oauth_client_secret),
        shoptet_oauth_redirect_url=REDIRECT,
        shoptet_oauth_server_url=sim.url,
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker") as worker:
        return await worker.get("/shoptet/install", params={"code": code})


def _client(
    http: httpx.AsyncClient, sim: SimulatorServer, app: AddonApplication | PremiumApplication, install: Install
) -> ShoptetClient:
    return ShoptetClient(http=http, application=app, install=install, limiter=LocalLimiter(), base_url=sim.url)


async def test_premium_install_add_verifies_the_token(
    sim: SimulatorServer, http: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'cli.sqlite3'}")
    monkeypatch.setenv("SECRET_KEY", key := SecretBox.generate_key())
    monkeypatch.setenv("SHOPTET_API_URL", sim.url)
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        bad = await asyncio.to_thread(
            runner.invoke, install_app, ["add", "premium", "--user", "bad", "--token", "not-a-token"]
        )
        good = await asyncio.to_thread(
            runner.invoke, install_app, ["add", "premium", "--user", "shop", "--token", sim.premium_token()]
        )
    finally:
        get_settings.cache_clear()
    assert bad.exit_code == 1 and "token refused by Shoptet: invalid-token" in bad.output
    assert good.exit_code == 0, good.output

    store = await SqlInstallStore.open(f"sqlite:///{tmp_path / 'cli.sqlite3'}", SecretBox(key))
    try:
        assert [i.user for i in await store.list_installs()] == ["shop"]
        install = await store.get_install("shop", "shoptet-premium")
        assert install is not None
        eshop_id = sim.state.eshops[0].eshop_id
        assert install.eshop_id == str(eshop_id) and install.settings["eshopId"] == eshop_id
        body = await _client(http, sim, PremiumApplication(), install).request("GET", "/api/eshop")
        assert body["data"]["contactInformation"]["eshopId"] == eshop_id
    finally:
        await store.close()


async def test_addon_install_flow_and_a_refused_reused_code(
    sim: SimulatorServer, http: httpx.AsyncClient, store: SqlInstallStore
) -> None:
    response = await _install_addon(sim, http, store)
    assert response.status_code == 200, response.text
    eshop = sim.state.eshops[0]
    install = await store.find_by_eshop(str(eshop.eshop_id), "shoptet")
    assert install is not None and install.enabled
    assert install.settings == {"eshopId": eshop.eshop_id, "eshopUrl": eshop.url, "contactEmail": eshop.contact_email}
    assert set(install.secrets) == {"oauthToken"}

    app = AddonApplication(store=store, http=http, oauth_server_url=sim.url)
    body = await _client(http, sim, app, install).request("GET", "/api/eshop")
    assert body["data"]["contactInformation"]["eshopId"] == eshop.eshop_id
    assert (await _stats(http, sim))["issued"] == 1


async def test_fifty_requests_with_an_expired_token_refresh_once(
    sim: SimulatorServer, http: httpx.AsyncClient, store: SqlInstallStore
) -> None:
    assert (await _install_addon(sim, http, store)).status_code == 200
    install = (await store.list_installs("shoptet"))[0]
    app = AddonApplication(store=store, http=http, oauth_server_url=sim.url)
    client = _client(http, sim, app, install)
    await client.request("GET", "/api/eshop")
    # Shoptet's clock moves past the token's 30 minutes; our cache still thinks it is fresh.
    await http.post(f"{sim.url}/_sim/clock/advance", json={"seconds": 1801})

    results = await asyncio.gather(*(client.request("GET", "/api/eshop") for _ in range(50)))

    assert len(results) == 50
    assert app.refreshes == 2  # the first token, then exactly one refresh
    stats = await _stats(http, sim)
    assert stats["issued"] == 2
    by_status = (await http.get(f"{sim.url}/_sim/stats")).json()["requests"]["byEndpoint"]
    assert sum(n for endpoint in by_status.values() for status, n in endpoint.items() if status == "401") >= 1


async def test_two_worker_processes_share_one_token(
    sim: SimulatorServer, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    key = SecretBox.generate_key()
    db_url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    store = await SqlInstallStore.open(db_url, SecretBox(key))
    try:
        assert (await _install_addon(sim, http, store)).status_code == 200
        user = (await store.list_installs("shoptet"))[0].user
    finally:
        await store.close()
    # Short-lived tokens so that both processes go through several refreshes in a few seconds.
    ttl, seconds = 4, 5.0
    await http.put(
        f"{sim.url}/_sim/config",
        json={"access_token_ttl_seconds": ttl, "per_token_limit": 20, "bucket_enabled": False},
    )
    env = {**os.environ, "SECRET_KEY": key, "PYTHONPATH": str(Path(__file__).parents[2])}
    args = [str(WORKER_SCRIPT), db_url, sim.url, sim.url, user, str(seconds), "4"]
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = [await p.communicate() for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err.decode()[-2000:]
    summaries = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs]
    assert all(s["requests"] > 0 for s in summaries)

    stats = await _stats(http, sim)
    by_install = next(iter(stats["byInstall"].values()))  # type: ignore[attr-defined]
    assert by_install["evicted"] == 0  # no token was ever pushed out by a sixth
    assert stats["issued"] == sum(s["refreshes"] for s in summaries)
    # one token per half TTL (refreshed early), give or take the start and the end
    assert stats["issued"] <= seconds / (ttl / 2) + 2
