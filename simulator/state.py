"""``SimState``: the one object holding a simulator's data, credentials, limits and counters.

Reachable as ``app.state.sim`` and ``SimulatorServer.state``. It lives on the server's event loop;
tests may read it directly but should change data through the admin API (``/_sim/...``), which
also produces the change-feed entries and webhooks a real change would.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from simulator.config import SimulatorConfig
from simulator.envelope import ShoptetError
from simulator.faults import FaultPlan
from simulator.jobs import Jobs
from simulator.limits import LeakyBuckets, WriteLocks
from simulator.oauth import OAuthServer
from simulator.seed import Seeder, signature_key
from simulator.stats import Stats
from simulator.store import EshopData
from simulator.timefmt import Clock
from simulator.webhooks import Webhooks

PREMIUM_HEADER = "shoptet-private-api-token"
ADDON_HEADER = "shoptet-access-token"


class SimState:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.clock = Clock()
        self.stats = Stats()
        self.seeder = Seeder(config)
        self.rng = random.Random(f"{config.seed}:runtime")  # orders created through the admin API
        self.eshops: list[EshopData] = self.seeder.eshops()
        self.by_id: dict[int, EshopData] = {e.eshop_id: e for e in self.eshops}
        self.by_premium_token: dict[str, EshopData] = {e.premium_token: e for e in self.eshops}
        self.oauth = OAuthServer(config, self.clock, self.stats)
        self.webhooks = Webhooks(config, self.stats)
        self.jobs = Jobs(config, self.webhooks)
        self.buckets = LeakyBuckets()
        self.locks = WriteLocks()
        self.faults = FaultPlan(config.seed)
        self._key_generation: dict[int, int] = {}

    def eshop(self, eshop_id: int | None) -> EshopData:
        if eshop_id is None:
            return self.eshops[0]
        found = self.by_id.get(eshop_id)
        if found is None:
            raise ShoptetError(404, "eshop-not-found", f"E-shop {eshop_id} is not simulated.", str(eshop_id))
        return found

    def authenticate(self, headers: Mapping[str, str]) -> EshopData:
        """The e-shop a request's token belongs to; 401 envelopes as Shoptet words them."""
        premium = headers.get(PREMIUM_HEADER)
        if premium:
            eshop = self.by_premium_token.get(premium)
            if eshop is None:
                raise ShoptetError(401, "invalid-token", "Invalid private API token.", "private-api-token")
            return eshop
        access = headers.get(ADDON_HEADER)
        if access:
            return self.by_id[self.oauth.eshop_for_access_token(access)]
        raise ShoptetError(
            401,
            "missing-access-token",
            "Missing access token. Please add `Shoptet-Access-Token` header to your request.",
            "unknown",
        )

    def renew_signature_key(self, eshop: EshopData) -> str:
        generation = self._key_generation.get(eshop.eshop_id, 0) + 1
        self._key_generation[eshop.eshop_id] = generation
        eshop.signature_key = signature_key(self.config.seed, eshop.eshop_id, generation)
        return eshop.signature_key

    def reset_stats(self) -> None:
        self.stats.reset()
        self.buckets.reset()
