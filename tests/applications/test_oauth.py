"""The OAuth server calls: form fields sent, answers validated, refusals explained."""

from __future__ import annotations

from urllib.parse import parse_qs

import httpx
import pytest
import respx

from applications.oauth import OAuthError, exchange_code, fetch_access_token, oauth_url

OAUTH = "https://oauth.test"


def test_oauth_url_accepts_both_forms() -> None:
    assert oauth_url("https://e.test/", "token") == "https://e.test/action/ApiOAuthServer/token"
    assert oauth_url("https://e.test/action/ApiOAuthServer", "token") == "https://e.test/action/ApiOAuthServer/token"


async def test_exchange_code_sends_the_form_and_parses_the_answer(
    shoptet: respx.Router, http: httpx.AsyncClient
) -> None:
    route = shoptet.post(f"{OAUTH}/action/ApiOAuthServer/token").respond(
        200,
        json={
            "access_token": "permanent-oauth",
            "token_type": "bearer",
            "scope": "api",
            "eshopId": 4321,
            "eshopUrl": "https://shop.test/",
            "contactEmail": "owner@shop.test",
        },
    )
    got = await exchange_code(
        http, OAUTH, code="c0de", client_id="cid", client_secret="csecret", redirect_uri="https://me.test/cb"
    )
    sent = parse_qs(route.calls.last.request.content.decode())
    assert sent == {
        "code": ["c0de"],
        "client_id": ["cid"],
        "client_secret": ["csecret"],
        "redirect_uri": ["https://me.test/cb"],
        "scope": ["api"],
        "grant_type": ["authorization_code"],
    }
    assert got.eshop_id == "4321" and got.eshop_url == "https://shop.test/"
    assert got.contact_email == "owner@shop.test"
    assert got.oauth_token.get_secret_value() == "permanent-oauth"
    assert "permanent-oauth" not in repr(got)


async def test_refused_code_carries_the_servers_reason(shoptet: respx.Router, http: httpx.AsyncClient) -> None:
    shoptet.post(f"{OAUTH}/action/ApiOAuthServer/token").respond(
        400, json={"error": "invalid_grant", "error_description": "Authorization code has expired"}
    )
    with pytest.raises(OAuthError, match="Authorization code has expired") as caught:
        await exchange_code(http, OAUTH, code="old", client_id="c", client_secret="s", redirect_uri="r")
    assert caught.value.refused and caught.value.status == 400


async def test_unreachable_server_is_not_a_refusal(shoptet: respx.Router, http: httpx.AsyncClient) -> None:
    shoptet.get(f"{OAUTH}/action/ApiOAuthServer/getAccessToken").mock(side_effect=httpx.ConnectError("down"))
    with pytest.raises(OAuthError, match="not reachable") as caught:
        await fetch_access_token(http, OAUTH, "oauth")
    assert not caught.value.refused


@pytest.mark.parametrize(("status", "refused"), [(400, True), (401, True), (408, False), (429, False), (503, False)])
async def test_only_a_lasting_client_error_is_a_refusal(
    shoptet: respx.Router, http: httpx.AsyncClient, status: int, refused: bool
) -> None:
    """A 429 or 408 from the OAuth server says "not now": the messages waiting on it are retried."""
    shoptet.get(f"{OAUTH}/action/ApiOAuthServer/getAccessToken").respond(status, json={"error": "x"})
    with pytest.raises(OAuthError) as caught:
        await fetch_access_token(http, OAUTH, "oauth")
    assert (caught.value.status, caught.value.refused) == (status, refused)


async def test_fetch_access_token_uses_the_bearer_oauth_token(shoptet: respx.Router, http: httpx.AsyncClient) -> None:
    route = shoptet.get(f"{OAUTH}/action/ApiOAuthServer/getAccessToken").respond(
        200, json={"access_token": "acc-1", "expires_in": 1800}
    )
    got = await fetch_access_token(http, OAUTH, "perm")
    assert route.calls.last.request.headers["Authorization"] == "Bearer perm"
    assert got.token.get_secret_value() == "acc-1" and got.expires_in == 1800
