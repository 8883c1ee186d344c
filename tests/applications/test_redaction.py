"""Credentials a request carried never come back out of Shoptet's answer (Shoptet's 403 quotes the token)."""

from __future__ import annotations

import httpx
import pytest
import respx

from applications.client import raise_for_status
from applications.oauth import OAuthError, exchange_code
from applications.premium import InvalidPremiumToken, verify_premium_token
from applications.redaction import redact
from worker.errors import StopError

API = "https://api.example.test"
TOKEN = "123456-p-SECRET123-abcdef"


def no_rights(request: httpx.Request) -> httpx.Response:
    """Shoptet's documented 403 (openapi.yaml, invalid-token-no-rights), quoting the token it got."""
    token = request.headers.get("Shoptet-Private-API-Token") or request.headers.get("Shoptet-Access-Token")
    message = f'Your access token "{token}" has no defined rights for this resource.'
    error = {"errorCode": "invalid-token-no-rights", "message": message, "instance": f"token {token}"}
    return httpx.Response(403, json={"data": None, "errors": [error]})


async def test_a_403_quoting_the_token_keeps_no_trace_of_it() -> None:
    async with respx.mock(base_url=API) as router, httpx.AsyncClient(base_url=API) as http:
        router.get("/api/stocks").mock(side_effect=no_rights)
        response = await http.get("/api/stocks", headers={"Shoptet-Private-API-Token": TOKEN})

    with pytest.raises(StopError) as raised:
        raise_for_status(response)
    error = raised.value
    assert error.status == 403 and "invalid-token-no-rights" in error.message
    assert "SECRET123" not in error.message and "SECRET123" not in repr(error.body)
    assert 'access token "***"' in error.message


async def test_install_add_with_a_token_without_rights_does_not_print_it() -> None:
    async with respx.mock(base_url=API) as router, httpx.AsyncClient() as http:
        router.get("/api/eshop").mock(side_effect=no_rights)
        with pytest.raises(InvalidPremiumToken) as raised:
            await verify_premium_token(http, API, TOKEN)
    assert "invalid-token-no-rights" in str(raised.value) and "SECRET123" not in str(raised.value)


async def test_an_oauth_refusal_echoing_the_client_secret_does_not_repeat_it() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": "invalid_client", "error_description": request.content.decode()})

    async with respx.mock(base_url=API) as router, httpx.AsyncClient() as http:
        router.post("/action/ApiOAuthServer/token").mock(side_effect=echo)
        with pytest.raises(OAuthError) as raised:
            await exchange_code(
                http, API, code="CODE-SECRET-1", client_id="id", client_secret="CLIENT-SECRET-1", redirect_uri="x"
            )
    assert "CLIENT-SECRET-1" not in str(raised.value) and "CODE-SECRET-1" not in str(raised.value)


def test_a_shortened_token_in_shoptets_wording_is_hidden_too() -> None:
    """Shoptet's own example shows the token shortened ("afd..123"): not a value we could match."""
    answer = {"errors": [{"message": 'Your access token "afd..123" has no defined rights.'}]}
    assert redact(answer, []) == {"errors": [{"message": 'Your access token "***" has no defined rights.'}]}


def test_an_install_dumped_carries_no_secrets() -> None:
    from worker.store import Install

    install = Install(user="shop", application="shoptet-premium", secrets={"token": TOKEN})
    assert "secrets" not in install.model_dump() and TOKEN not in install.model_dump_json()
    assert install.secrets == {"token": TOKEN}


def test_a_redirect_says_where_it_pointed() -> None:
    """Not followed (the token must not go elsewhere); it went to trash as "-> 301" and nothing more."""
    request = httpx.Request("GET", "http://api.myshoptet.com/api/orders")
    location = "https://user:pw@api.myshoptet.com/api/orders?signature=SECRET"  # its secrets stay out
    response = httpx.Response(301, headers={"Location": location}, request=request)
    with pytest.raises(
        StopError, match=r"-> 301 \(redirected to https://api\.myshoptet\.com/api/orders, not followed\)$"
    ):
        raise_for_status(response)


@pytest.mark.parametrize(("location", "said"), [(None, "nowhere"), ("http://[::1", "an invalid location")])
def test_a_redirect_without_a_usable_location_is_still_a_clear_stop(location: str | None, said: str) -> None:
    request = httpx.Request("PATCH", "http://api.myshoptet.com/api/stocks/1/movements")
    headers = {} if location is None else {"Location": location}
    with pytest.raises(StopError, match=f"redirected to {said}, not followed"):
        raise_for_status(httpx.Response(302, headers=headers, request=request))
