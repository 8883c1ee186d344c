"""The OAuth server of an e-shop: one-use install codes, permanent OAuth tokens, short-lived access tokens.

Shoptet allows at most five valid access tokens per install; issuing a sixth invalidates the
oldest. Expiry uses ``Clock`` so that tests can move time instead of sleeping.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field

from simulator.config import SimulatorConfig
from simulator.envelope import ShoptetError
from simulator.stats import Stats
from simulator.timefmt import Clock

CODE_LENGTH = 255  # Shoptet's install codes are 255 characters long


class OAuthError(Exception):
    """An OAuth-style refusal: ``{error, error_description}`` with an HTTP status."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


@dataclass
class InstallCode:
    eshop_id: int
    redirect_uri: str | None
    expires_at: float


@dataclass
class AccessToken:
    token: str
    expires_at: float
    evicted: bool = False


@dataclass
class Install:
    """One addon installation: the permanent OAuth token and the access tokens issued from it."""

    install_id: str
    eshop_id: int
    oauth_token: str
    access_tokens: list[AccessToken] = field(default_factory=list)


@dataclass
class ExchangeForm:
    code: str
    client_id: str
    client_secret: str
    redirect_uri: str | None
    scope: str | None
    grant_type: str


class OAuthServer:
    def __init__(self, config: SimulatorConfig, clock: Clock, stats: Stats) -> None:
        self.config = config
        self.clock = clock
        self.stats = stats
        self._rng = random.Random(f"{config.seed}:oauth")
        self.codes: dict[str, InstallCode] = {}
        self.installs: dict[str, Install] = {}  # oauth token -> install
        self._access: dict[str, tuple[Install, AccessToken]] = {}

    def _random(self, length: int) -> str:
        alphabet = string.ascii_letters + string.digits
        return "".join(self._rng.choice(alphabet) for _ in range(length))

    def create_code(self, eshop_id: int, redirect_uri: str | None = None) -> str:
        code = self._random(CODE_LENGTH)
        self.codes[code] = InstallCode(eshop_id, redirect_uri, self.clock.time() + self.config.oauth_code_ttl_seconds)
        return code

    def exchange(self, form: ExchangeForm) -> Install:
        """Trade a one-use code for the install's permanent OAuth token."""
        if form.grant_type != "authorization_code":
            raise OAuthError(400, "unsupported_grant_type", "grant_type must be authorization_code")
        if form.client_id != self.config.oauth_client_id or form.client_secret != self.config.oauth_client_secret:
            raise OAuthError(401, "invalid_client", "Unknown client or wrong client secret")
        if form.scope not in (None, "", "api"):
            raise OAuthError(400, "invalid_scope", "scope must be api")
        issued = self.codes.pop(form.code, None)  # one use, even when it then fails
        if issued is None or issued.expires_at < self.clock.time():
            raise OAuthError(400, "invalid_grant", "Code is invalid, expired or already used")
        if issued.redirect_uri is not None and form.redirect_uri != issued.redirect_uri:
            raise OAuthError(400, "invalid_grant", "redirect_uri does not match the one the code was issued for")
        install = Install(
            install_id=f"{issued.eshop_id}-{len(self.installs) + 1}",
            eshop_id=issued.eshop_id,
            oauth_token=f"{issued.eshop_id}-a-{self._random(40)}",
        )
        self.installs[install.oauth_token] = install
        return install

    def issue_access_token(self, oauth_token: str) -> AccessToken:
        install = self.installs.get(oauth_token)
        if install is None:
            raise OAuthError(401, "invalid_token", "Unknown OAuth access token")
        now = self.clock.time()
        install.access_tokens = [t for t in install.access_tokens if t.expires_at > now and not t.evicted]
        counters = self.stats.access_tokens[install.install_id]
        while len(install.access_tokens) >= self.config.max_valid_access_tokens:
            install.access_tokens.pop(0).evicted = True
            counters.evicted += 1
        token = AccessToken(f"{install.eshop_id}-t-{self._random(40)}", now + self.config.access_token_ttl_seconds)
        install.access_tokens.append(token)
        self._access[token.token] = (install, token)
        counters.issued += 1
        counters.max_valid = max(counters.max_valid, len(install.access_tokens))
        return token

    def valid_access_tokens(self, install: Install) -> list[AccessToken]:
        now = self.clock.time()
        return [t for t in install.access_tokens if t.expires_at > now and not t.evicted]

    def eshop_for_access_token(self, token: str) -> int:
        """The e-shop an API access token belongs to; 401 ``expired-token`` once it is no longer valid."""
        found = self._access.get(token)
        if found is None:
            raise ShoptetError(401, "invalid-token", "Invalid access token.", "access-token")
        install, access = found
        if access.evicted:
            raise ShoptetError(
                401, "expired-token", "Token is expired. A newer token replaced it (max 5 valid).", "access-token"
            )
        if access.expires_at <= self.clock.time():
            raise ShoptetError(401, "expired-token", "Token is expired. Please ask for new one.", "access-token")
        return install.eshop_id
