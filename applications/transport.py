"""One small connection pool per Shoptet token behind the worker's single ``httpx.AsyncClient``.

httpcore's pool looks at every pooled connection on every request (``has_expired`` polls each idle
socket). With one shared pool for ten e-shops that is thirty-odd sockets polled per request, and it
was the worker's largest CPU cost in the many-e-shops benchmark. Shoptet allows 3 connections per
token anyway, so a pool per token never needs more than 3 and each request scans at most 3.

:class:`~applications.client.ShoptetClient` names the pool in the request extension
:data:`POOL_KEY` (the limiter key: one per token). Requests without it (OAuth token exchange,
install callbacks) use the shared default pool.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator

import httpx

#: Request extension naming the per-token pool a request belongs to.
POOL_KEY = "shoptet-pool"


class _Pool:
    __slots__ = ("in_flight", "last_used", "transport")

    def __init__(self, transport: httpx.AsyncHTTPTransport) -> None:
        self.transport = transport
        self.in_flight = 0
        self.last_used = time.monotonic()

    def release(self) -> None:
        self.in_flight -= 1
        self.last_used = time.monotonic()


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that gives its pool back when it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream | httpx.SyncByteStream, pool: _Pool) -> None:
        assert isinstance(stream, httpx.AsyncByteStream)
        self._stream = stream
        self._pool: _Pool | None = pool

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._pool is not None:
                self._pool.release()
                self._pool = None


class PerTokenTransport(httpx.AsyncBaseTransport):
    """Routes each request to its token's pool; pools idle for ``idle_seconds`` are closed."""

    def __init__(
        self,
        *,
        per_token: int = 3,
        default_limits: httpx.Limits | None = None,
        idle_seconds: float = 300.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        # one SSL context for every pool: building one loads the CA bundle, which takes milliseconds
        self._verify = ssl.create_default_context() if verify is True else verify
        self._limits = httpx.Limits(max_connections=per_token, max_keepalive_connections=per_token)
        self._default = httpx.AsyncHTTPTransport(limits=default_limits or httpx.Limits(), verify=self._verify)
        self._pools: dict[str, _Pool] = {}
        self._idle_seconds = idle_seconds
        self._next_sweep = time.monotonic() + idle_seconds

    @property
    def pools(self) -> int:
        return len(self._pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = request.extensions.get(POOL_KEY)
        if not isinstance(key, str):
            return await self._default.handle_async_request(request)
        pool = self._pools.get(key)
        if pool is None:
            await self._sweep()
            pool = self._pools[key] = _Pool(httpx.AsyncHTTPTransport(limits=self._limits, verify=self._verify))
        pool.in_flight += 1
        try:
            response = await pool.transport.handle_async_request(request)
        except BaseException:
            pool.release()
            raise
        # the body is read after this returns (a snapshot for minutes): the pool stays in use until then
        response.stream = _ReleasingStream(response.stream, pool)
        return response

    async def _sweep(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._idle_seconds
        idle = [k for k, p in self._pools.items() if p.in_flight == 0 and now - p.last_used > self._idle_seconds]
        for key in idle:
            await self._pools.pop(key).transport.aclose()

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.transport.aclose()
        await self._default.aclose()
