"""A stand-in worker process for the multi-process token test (run as a script, not collected).

Usage: token_worker.py DATABASE_URL API_URL OAUTH_URL USER SECONDS CONCURRENCY
(SECRET_KEY from the environment). Calls ``GET /api/eshop`` through the addon in a loop and prints
a JSON summary: requests made and access tokens this process fetched.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import httpx

from applications.addon import AddonApplication
from applications.client import ShoptetClient
from worker.limiter import LocalLimiter
from worker.store.crypto import SecretBox
from worker.store.sql import SqlInstallStore


async def main(database_url: str, api_url: str, oauth_url: str, user: str, seconds: float, concurrency: int) -> None:
    store = await SqlInstallStore.open(database_url, SecretBox(os.environ["SECRET_KEY"]))
    install = await store.get_install(user, "shoptet")
    assert install is not None
    done = 0
    async with httpx.AsyncClient(timeout=10) as http:
        app = AddonApplication(store=store, http=http, oauth_server_url=oauth_url)
        limiter = LocalLimiter(per_token=concurrency)
        client = ShoptetClient(http=http, application=app, install=install, limiter=limiter, base_url=api_url)
        stop = time.monotonic() + seconds

        async def loop() -> None:
            nonlocal done
            while time.monotonic() < stop:
                await client.request("GET", "/api/eshop")
                done += 1

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    await store.close()
    print(json.dumps({"requests": done, "refreshes": app.refreshes}))


if __name__ == "__main__":
    db, api, oauth, who, secs, conc = sys.argv[1:7]
    asyncio.run(main(db, api, oauth, who, float(secs), int(conc)))
