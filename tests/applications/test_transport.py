"""One connection pool per token: a token never gets more than its 3 connections, and one busy
token does not make another wait. Real sockets against a small local HTTP server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from applications.transport import POOL_KEY, PerTokenTransport


class CountingServer:
    """Answers every request after ``delay`` seconds; remembers connections and their peak."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.connections: set[tuple[str, int]] = set()
        self.open = 0
        self.peak_open = 0
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer.get_extra_info("peername"))
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                self.requests += 1
                await asyncio.sleep(self.delay)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/"


@pytest.fixture
async def server() -> AsyncIterator[CountingServer]:
    counting = CountingServer(delay=0.05)
    counting.server = await asyncio.start_server(counting.handle, "127.0.0.1", 0)
    async with counting.server:
        yield counting


async def test_a_token_never_opens_more_than_its_connections(server: CountingServer) -> None:
    transport = PerTokenTransport(per_token=3)
    async with httpx.AsyncClient(transport=transport) as http:
        answers = await asyncio.gather(*(http.get(server.url, extensions={POOL_KEY: "token-a"}) for _ in range(12)))
        assert [a.status_code for a in answers] == [200] * 12
        assert transport.pools == 1
    assert server.requests == 12
    assert len(server.connections) == 3  # twelve requests, three kept-alive connections
    assert server.peak_open == 3


async def test_tokens_have_separate_pools(server: CountingServer) -> None:
    transport = PerTokenTransport(per_token=1)
    async with httpx.AsyncClient(transport=transport) as http:
        started = time.perf_counter()
        await asyncio.gather(*(http.get(server.url, extensions={POOL_KEY: f"token-{i}"}) for i in range(5)))
        elapsed = time.perf_counter() - started
        assert transport.pools == 5
    # one connection per token, yet five tokens ran side by side (not 5 x 50 ms in a row)
    assert server.peak_open == 5
    assert elapsed < 0.2


async def test_requests_without_a_token_use_the_shared_pool(server: CountingServer) -> None:
    transport = PerTokenTransport(per_token=1)
    async with httpx.AsyncClient(transport=transport) as http:
        await asyncio.gather(*(http.get(server.url) for _ in range(4)))
        assert transport.pools == 0
    assert server.peak_open == 4


async def test_idle_pools_are_closed_but_not_while_a_body_is_being_read(server: CountingServer) -> None:
    transport = PerTokenTransport(per_token=3, idle_seconds=0.0)
    async with httpx.AsyncClient(transport=transport) as http:
        async with http.stream("GET", server.url, extensions={POOL_KEY: "streaming"}) as streaming:
            # another token's first request sweeps idle pools; "streaming" is still reading
            await http.get(server.url, extensions={POOL_KEY: "other"})
            assert "streaming" in transport._pools
            assert await streaming.aread() == b"ok"
        await asyncio.sleep(0.01)
        await http.get(server.url, extensions={POOL_KEY: "third"})
        assert "streaming" not in transport._pools  # closed once its body was read and it sat idle
    assert server.requests == 3
