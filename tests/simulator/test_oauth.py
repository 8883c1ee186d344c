"""The e-shop OAuth server: install code exchange, access tokens (max 5 valid), expiry as 401 expired-token."""

from __future__ import annotations

from typing import Any

import httpx

from simulator.server import SimulatorServer
from tests.simulator.helpers import addon_headers
from tests.simulator.openapi_conformance import assert_response_conforms

TOKEN = "/action/ApiOAuthServer/token"
ACCESS = "/action/ApiOAuthServer/getAccessToken"


async def install(client: httpx.AsyncClient, sim: SimulatorServer, eshop_index: int = 0) -> dict[str, Any]:
    eshop_id = sim.state.eshops[eshop_index].eshop_id
    code = (
        await client.post("/_sim/oauth/codes", json={"eshopId": eshop_id, "redirectUri": "https://addon/cb"})
    ).json()["code"]
    form = {
        "code": code,
        "client_id": sim.state.config.oauth_client_id,
        "client_secret": sim.state.config.oauth_client_secret,
        "redirect_uri": "https://addon/cb",
        "scope": "api",
        "grant_type": "authorization_code",
    }
    response = await client.post(TOKEN, data=form)
    assert response.status_code == 200, response.text
    return {"form": form, **response.json()}


async def access_token(client: httpx.AsyncClient, oauth_token: str) -> str:
    response = await client.get(ACCESS, headers={"Authorization": f"Bearer {oauth_token}"})
    assert response.status_code == 200, response.text
    assert response.json()["expires_in"] > 0
    return str(response.json()["access_token"])


async def test_code_exchange_returns_the_installs_identity(make_sim: Any) -> None:
    sim = await make_sim(eshops=2)
    async with httpx.AsyncClient(base_url=sim.url) as client:
        installed = await install(client, sim, eshop_index=1)
        eshop = sim.state.eshops[1]
        assert installed["eshopId"] == eshop.eshop_id
        assert installed["eshopUrl"] == eshop.url and installed["contactEmail"] == eshop.contact_email
        assert installed["token_type"] == "bearer" and installed["scope"] == "api"
        assert len(installed["form"]["code"]) == 255

        reused = await client.post(TOKEN, data=installed["form"])  # one use only
        assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
        code = (await client.post("/_sim/oauth/codes", json={})).json()["code"]
        wrong = await client.post(TOKEN, data={**installed["form"], "code": code, "client_secret": "nope"})
        assert wrong.status_code == 401

        token = await access_token(client, installed["access_token"])
        info = await client.get("/api/eshop", headers=addon_headers(token))
        assert info.json()["data"]["contactInformation"]["eshopId"] == eshop.eshop_id  # the token picks the e-shop
        unknown = await client.get(ACCESS, headers={"Authorization": "Bearer nope"})
        assert unknown.status_code == 401


async def test_a_sixth_access_token_invalidates_the_oldest(make_sim: Any) -> None:
    sim = await make_sim()
    async with httpx.AsyncClient(base_url=sim.url) as client:
        oauth_token = (await install(client, sim))["access_token"]
        tokens = [await access_token(client, oauth_token) for _ in range(6)]
        statuses = [(await client.get("/api/stocks", headers=addon_headers(t))).status_code for t in tokens]
        assert statuses == [401, 200, 200, 200, 200, 200]
        expired = await client.get("/api/stocks", headers=addon_headers(tokens[0]))
        assert expired.json()["errors"][0]["errorCode"] == "expired-token"
        stats = (await client.get("/_sim/stats")).json()["accessTokens"]
    assert stats["issued"] == 6 and stats["maxValidAtOnce"] == 5
    (per_install,) = stats["byInstall"].values()
    assert per_install == {"issued": 6, "max_valid": 5, "evicted": 1}


async def test_expired_access_token_gets_401_expired_token(make_sim: Any) -> None:
    sim = await make_sim(access_token_ttl_seconds=60)
    async with httpx.AsyncClient(base_url=sim.url) as client:
        oauth_token = (await install(client, sim))["access_token"]
        token = await access_token(client, oauth_token)
        assert (await client.get("/api/orders", headers=addon_headers(token))).status_code == 200
        await client.post("/_sim/clock/advance", json={"seconds": 61})
        expired = await client.get("/api/orders", headers=addon_headers(token))
        assert expired.status_code == 401
        body = expired.json()
        assert body["errors"][0]["errorCode"] == "expired-token"
        assert_response_conforms("GET", "/api/orders", 401, body)
        fresh = await access_token(client, oauth_token)
        assert (await client.get("/api/orders", headers=addon_headers(fresh))).status_code == 200


async def test_short_real_lifetime(make_sim: Any) -> None:
    """A lifetime in seconds really elapses too (no clock moving), for end-to-end refresh tests."""
    import asyncio

    sim = await make_sim(access_token_ttl_seconds=0.3)
    async with httpx.AsyncClient(base_url=sim.url) as client:
        token = await access_token(client, (await install(client, sim))["access_token"])
        await asyncio.sleep(0.4)
        response = await client.get("/api/orders", headers=addon_headers(token))
    assert response.status_code == 401 and response.json()["errors"][0]["errorCode"] == "expired-token"
