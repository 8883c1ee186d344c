"""The worker's one HTTP client for Shoptet: httpx's API over aiohttp's connection pool.

Nodes, applications and their unit tests speak httpx (respx mocks it). Underneath, httpcore's
pure-Python HTTP/1.1 stack (anyio cancel scopes, h11, a pool that polls its sockets) was well over
half of the worker's event loop in the many-e-shops benchmark; aiohttp does the same work with a C
parser, and the loop's spare time is what keeps 3 requests per token in flight. The transport is
`httpx-aiohttp`, written by an httpx maintainer, so httpx's timeouts, errors and streaming keep
their meaning.

How many requests reach Shoptet at once is the limiter's job (3 per token, ``per_host`` in all);
the pool only needs room for them, per host: downloads and OAuth calls go to other hosts.

The client keeps no cookies, at either layer. One client serves every e-shop of the worker, so a
cookie one shop's response set (a load balancer's, say) would ride along with the next shop's
requests; Shoptet's API authenticates by token header and needs none. Both cookie jars also ran
on every response, about a tenth of the worker's time with ten shops.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport, HttpxAiohttpClient

from worker.settings import Settings

#: Idle keep-alive connections are closed after this long (uvicorn, like many servers, closes
#: them after 5 s; closing first avoids sending a request on a connection the server is dropping).
KEEPALIVE_SECONDS = 4.0
#: The longest a request waits for a connection (a pooled one, or a new one connecting): apart from
#: the answer's timeout, so that a connection that never opens is told apart from a request that
#: went out and got no answer (see ``ShoptetClient._request_seconds``).
CONNECT_SECONDS = 10.0


class _NoCookies(httpx.Cookies):
    """Stores none of a response's cookies (and so sends none)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class ShoptetHttpClient(HttpxAiohttpClient):
    """httpx over aiohttp, without cookies (see the module's docstring)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._no_cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        if cookies:
            raise ValueError("the Shoptet client keeps no cookies")


class _ShoptetTransport(AiohttpTransport):
    """httpx-aiohttp maps aiohttp's connection, timeout and payload errors to httpx's, not the
    rest: a garbled answer (a bad status line, two Content-Lengths) arrived as aiohttp's own
    ``ClientResponseError``, which the client took for a bug and trashed. From a flaky proxy or load
    balancer in front of Shoptet, such an answer is worth another try."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.ConnectTimeout as exc:
            cause = exc.__cause__
            if _after_sending(cause):
                # httpx-aiohttp calls a connection the server dropped or reset a connect timeout;
                # the request went out, and Shoptet may have acted on it (``unanswered`` errors)
                raise httpx.ReadError(str(cause) or type(cause).__name__, request=request) from cause
            raise
        except aiohttp.ClientError as exc:  # the mapped ones arrive as httpx errors already
            raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__, request=request) from exc


def _after_sending(error: BaseException | None) -> bool:
    """An aiohttp error of a connection that was up: dropped or reset once the request was sent."""
    if isinstance(error, aiohttp.ClientConnectorError):  # never connected
        return False
    return isinstance(error, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)


def shoptet_http_client(settings: Settings) -> httpx.AsyncClient:
    """The client every Shoptet call of the worker goes through (one per worker process)."""
    max_connections = settings.shoptet_max_connections_per_host

    def session() -> aiohttp.ClientSession:
        # called by the transport on its first request, inside the running event loop
        # per host, not in all: a result file on an e-shop's domain is read for minutes while its
        # items are emitted, and with one cap for every host a few of them left API requests waiting
        # for a connection, holding their token's slot until their timeout
        connector = aiohttp.TCPConnector(
            limit=0,
            limit_per_host=max_connections,
            keepalive_timeout=KEEPALIVE_SECONDS,
            ssl=httpx.create_ssl_context(),
        )
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    answer = settings.shoptet_timeout_seconds
    connect = min(CONNECT_SECONDS, answer)
    timeout = httpx.Timeout(answer, connect=connect, pool=connect)
    return ShoptetHttpClient(timeout=timeout, transport=_ShoptetTransport(client=session))
