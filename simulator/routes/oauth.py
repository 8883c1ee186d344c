"""The e-shop's OAuth server: ``/action/ApiOAuthServer/token`` and ``/getAccessToken``."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from simulator.oauth import ExchangeForm, OAuthError
from simulator.routes.deps import get_state
from simulator.state import SimState

router = APIRouter()

TOKEN_PATH = "/action/ApiOAuthServer/token"
ACCESS_TOKEN_PATH = "/action/ApiOAuthServer/getAccessToken"


def _refusal(error: OAuthError) -> Response:
    return JSONResponse({"error": error.error, "error_description": error.description}, status_code=error.status)


@router.post(TOKEN_PATH)
async def exchange_code(request: Request, state: SimState = Depends(get_state)) -> Response:
    """Install: trade the one-use ``code`` for the permanent OAuth token and the e-shop's identity."""
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode(), keep_blank_values=True).items()}
    try:
        install = state.oauth.exchange(
            ExchangeForm(
                code=form.get("code", ""),
                client_id=form.get("client_id", ""),
                client_secret=form.get("client_secret", ""),
                redirect_uri=form.get("redirect_uri"),
                scope=form.get("scope"),
                grant_type=form.get("grant_type", ""),
            )
        )
    except OAuthError as error:
        state.stats.requests[(f"POST {TOKEN_PATH}", error.status)] += 1
        return _refusal(error)
    state.stats.requests[(f"POST {TOKEN_PATH}", 200)] += 1
    eshop = state.eshop(install.eshop_id)
    return JSONResponse(
        {
            "access_token": install.oauth_token,
            "token_type": "bearer",
            "scope": "api",
            "eshopId": eshop.eshop_id,
            "eshopUrl": eshop.url,
            "contactEmail": eshop.contact_email,
        }
    )


@router.get(ACCESS_TOKEN_PATH)
async def access_token(request: Request, state: SimState = Depends(get_state)) -> Response:
    """A 30-minute API access token; a sixth valid one invalidates the oldest."""
    scheme, _, oauth_token = request.headers.get("authorization", "").partition(" ")
    try:
        if scheme.lower() != "bearer" or not oauth_token:
            raise OAuthError(401, "invalid_request", "Authorization: Bearer <OAuth access token> is required")
        token = state.oauth.issue_access_token(oauth_token.strip())
    except OAuthError as error:
        state.stats.requests[(f"GET {ACCESS_TOKEN_PATH}", error.status)] += 1
        return _refusal(error)
    state.stats.requests[(f"GET {ACCESS_TOKEN_PATH}", 200)] += 1
    ttl = state.config.access_token_ttl_seconds
    return JSONResponse({"access_token": token.token, "expires_in": int(ttl) if ttl.is_integer() else ttl})
