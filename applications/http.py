"""The worker's one HTTP client for Shoptet: httpx's API over aiohttp's connection pool.

Nodes, applications and their unit tests speak httpx (respx mocks it). Underneath, httpcore's
pure-Python HTTP/1.1 stack (anyio cancel scopes, h11, a pool that polls its sockets) was well over
half of the worker's event loop in the many-e-shops benchmark; aiohttp does the same work with a C
parser, and the loop's spare time is what keeps 3 requests per token in flight. The transport is
`httpx-aiohttp`, written by an httpx maintainer, so httpx's timeouts, errors and streaming keep
their meaning.

How many requests reach Shoptet at once is the limiter's job (3 per token, ``per_host`` in all);
the pool only needs room for them.
"""

from __future__ import annotations

import httpx
from httpx_aiohttp import HttpxAiohttpClient

from worker.settings import Settings

#: Idle keep-alive connections are closed after this long (uvicorn, like many servers, closes
#: them after 5 s; closing first avoids sending a request on a connection the server is dropping).
KEEPALIVE_SECONDS = 4.0


def shoptet_http_client(settings: Settings) -> httpx.AsyncClient:
    """The client every Shoptet call of the worker goes through (one per worker process)."""
    return HttpxAiohttpClient(
        timeout=settings.shoptet_timeout_seconds,
        limits=httpx.Limits(
            max_connections=settings.shoptet_max_connections_per_host,
            keepalive_expiry=KEEPALIVE_SECONDS,
        ),
    )
