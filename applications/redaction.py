"""Credentials taken out of what Shoptet answers, before it is kept anywhere.

Shoptet's 403 ``invalid-token-no-rights`` quotes the caller's token ("Your access token "..." has
no defined rights for this resource", openapi.yaml). Its answer becomes an error message and an
error body, which go to logs, Kafka headers (a retry's ``result-message``), trash rows and the CLI:
a premium token never expires, so one such row gave it away for good.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

import httpx

#: Request headers that carry a credential (the premium token, an addon access token, OAuth's bearer).
CREDENTIAL_HEADERS = ("Shoptet-Private-API-Token", "Shoptet-Access-Token", "Authorization")
#: Form fields of a request that carry a credential (OAuth's code exchange).
CREDENTIAL_FIELDS = ("client_secret", "code")
#: Shoptet's wording, whatever the token looks like in it (whole, or shortened as in its example).
_QUOTED_TOKEN = re.compile(r'(\btoken\s*)"[^"]*"', re.IGNORECASE)
#: Values this short are not credentials (and replaced, they would mangle ordinary words).
MIN_SECRET_CHARS = 8
HIDDEN = "***"


def request_credentials(request: httpx.Request) -> list[str]:
    """The credential values ``request`` carried."""
    secrets = []
    for name in CREDENTIAL_HEADERS:
        value = request.headers.get(name, "")
        if name == "Authorization":
            value = value.partition(" ")[2] or value  # "Bearer <token>": the token
        if len(value) >= MIN_SECRET_CHARS:
            secrets.append(value)
    if request.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
        form = parse_qs(request.content.decode(errors="replace"))
        secrets += [v for name in CREDENTIAL_FIELDS for v in form.get(name, ()) if len(v) >= MIN_SECRET_CHARS]
    return secrets


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` (a decoded JSON answer, or text) with every ``secrets`` value and every quoted token
    replaced by ``***``."""
    hidden = sorted(set(secrets), key=len, reverse=True)  # a longer one may contain a shorter one
    return _redact(value, hidden)


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, HIDDEN)
        return _QUOTED_TOKEN.sub(rf'\1"{HIDDEN}"', value)
    if isinstance(value, dict):
        return {key: _redact(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact(item, secrets) for item in value]
    return value


def answer_without_credentials(response: httpx.Response, answer: Any) -> Any:
    """``answer`` (what ``response`` said, decoded) without the credentials its request carried."""
    return redact(answer, request_credentials(response.request))
