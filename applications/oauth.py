"""The two calls to Shoptet's OAuth server: code exchange at install, API access token on demand.

Kept apart from the application so that the install callback, the CLI and the token cache share one
tested implementation. Responses are validated with pydantic at this edge; tokens are ``SecretStr``
so that a stray log line or repr shows ``**********`` instead of a credential.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from applications.redaction import answer_without_credentials

OAUTH_PATH = "/action/ApiOAuthServer"


#: Client-error statuses that a later attempt may not get.
RETRYABLE_4XX = frozenset({408, 425, 429})


class OAuthError(Exception):
    """The OAuth server refused (``status`` is its HTTP status) or could not be reached (None)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    @property
    def refused(self) -> bool:
        """True when asking again with the same input cannot help: a 4xx answer, except those that
        say "not now" (408 timeout, 425 too early, 429 too many requests)."""
        return self.status is not None and 400 <= self.status < 500 and self.status not in RETRYABLE_4XX


class InstalledAddon(BaseModel):
    """What the code exchange returns: the permanent OAuth token and the e-shop's identity."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    oauth_token: SecretStr = Field(alias="access_token")
    eshop_id: str = Field(alias="eshopId")
    eshop_url: str | None = Field(default=None, alias="eshopUrl")
    contact_email: str | None = Field(default=None, alias="contactEmail")

    @field_validator("eshop_id", mode="before")
    @classmethod
    def _eshop_id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class AccessToken(BaseModel):
    """A short-lived API access token (30 minutes at Shoptet)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    token: SecretStr = Field(alias="access_token")
    expires_in: float = Field(gt=0)


def oauth_url(server_url: str, action: str) -> str:
    """``<server>/action/ApiOAuthServer/<action>``; a server URL that already ends in the path works too."""
    base = server_url.rstrip("/")
    if not base.endswith(OAUTH_PATH):
        base += OAUTH_PATH
    return f"{base}/{action}"


def _describe(response: httpx.Response) -> str:
    """Shoptet's own words for a refusal: OAuth's error_description, or its API error list."""
    try:
        body = answer_without_credentials(response, response.json())
    except ValueError:
        return answer_without_credentials(response, response.text[:300]) or response.reason_phrase
    if isinstance(body, dict):
        if body.get("error_description") or body.get("error"):
            return str(body.get("error_description") or body.get("error"))
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            return "; ".join(str(e.get("message") or e.get("errorCode")) for e in errors if isinstance(e, dict))
    return str(body)[:300]


async def _call(http: httpx.AsyncClient, what: str, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    try:
        response = await http.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise OAuthError(f"{what}: OAuth server not reachable ({type(exc).__name__})") from exc
    if response.status_code >= 300:
        raise OAuthError(f"{what} refused: {_describe(response)}", status=response.status_code)
    try:
        body = response.json()
    except ValueError as exc:
        raise OAuthError(f"{what}: OAuth server answered no JSON", status=response.status_code) from exc
    if not isinstance(body, dict):
        raise OAuthError(f"{what}: unexpected answer from the OAuth server", status=response.status_code)
    return body


async def exchange_code(
    http: httpx.AsyncClient,
    server_url: str,
    *,
    code: str,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
) -> InstalledAddon:
    """Trade the one-use install ``code`` for the permanent OAuth token of the e-shop."""
    body = await _call(
        http,
        "code exchange",
        "POST",
        oauth_url(server_url, "token"),
        data={
            "code": code,
            "client_id": client_id,
            "client_secret": client_secret,
            "redirect_uri": redirect_uri,
            "scope": "api",
            "grant_type": "authorization_code",
        },
    )
    try:
        return InstalledAddon.model_validate(body)
    except ValidationError as exc:
        raise OAuthError(
            f"code exchange: incomplete answer from the OAuth server ({exc.error_count()} errors)"
        ) from exc


async def fetch_access_token(http: httpx.AsyncClient, server_url: str, oauth_token: str) -> AccessToken:
    """Get a new API access token; every call creates one (Shoptet keeps at most 5 valid)."""
    body = await _call(
        http,
        "access token",
        "GET",
        oauth_url(server_url, "getAccessToken"),
        headers={"Authorization": f"Bearer {oauth_token}"},
    )
    try:
        return AccessToken.model_validate(body)
    except ValidationError as exc:
        raise OAuthError(f"access token: incomplete answer from the OAuth server ({exc.error_count()} errors)") from exc
