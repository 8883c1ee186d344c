"""The worker's HTTP client (httpx over aiohttp) with real sockets against a small local server:
JSON round trips, the limiter's 3 requests per token, streamed bodies, and transport failures
turned into retryable node errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from applications.client import ShoptetClient
from applications.http import shoptet_http_client
from applications.premium import PremiumApplication
from worker.errors import RetryableError
from worker.limiter import LocalLimiter
from worker.settings import Settings
from worker.store import Install


class Server:
    """Answers each request after ``delay`` seconds: an echo of the request as JSON, or (for
    ``/big``) a chunked body of ``BIG`` bytes. Counts requests in flight per token header."""

    BIG = 3 * 1024 * 1024

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.in_flight: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.connections = 0
        #: The Cookie header of each request (None when there was none).
        self.cookies: list[str | None] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                request_line, *header_lines = head.strip().split("\r\n")
                method, target, _ = request_line.split(" ")
                headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                token = headers.get("shoptet-private-api-token", "")
                self.cookies.append(headers.get("cookie"))
                self.in_flight[token] = self.in_flight.get(token, 0) + 1
                self.peak[token] = max(self.peak.get(token, 0), self.in_flight[token])
                await asyncio.sleep(self.delay)
                self.in_flight[token] -= 1
                if target == "/big":
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    chunk = b"x" * 65536
                    for _ in range(self.BIG // len(chunk)):
                        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        await writer.drain()
                    writer.write(b"0\r\n\r\n")
                else:
                    echo = json.dumps({"data": {"method": method, "target": target, "body": body.decode()}}).encode()
                    cookie = b"Set-Cookie: lb=shop-a; Path=/\r\n" if target == "/cookie" else b""
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
                        % (cookie, len(echo), echo)
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    serving = Server(delay=0.05)
    serving.server = await asyncio.start_server(serving.handle, "127.0.0.1", 0)
    async with serving.server:
        yield serving


@contextlib.asynccontextmanager
async def serving(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A local server answering each connection with ``handle``; its base URL."""
    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    finally:
        listener.close()
        await listener.wait_closed()


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings.model_validate({"database_url": f"sqlite:///{tmp_path / 's.sqlite3'}", **values})


def _client(
    http: httpx.AsyncClient, base_url: str, token: str = "token-a", limiter: LocalLimiter | None = None
) -> ShoptetClient:
    install = Install(user=token, application="shoptet-premium", eshop_id="1", secrets={"token": token})
    return ShoptetClient(
        http=http,
        application=PremiumApplication(),
        install=install,
        limiter=limiter or LocalLimiter(),
        base_url=base_url,
    )


async def test_json_round_trip_with_query_and_body(server: Server, tmp_path: Path) -> None:
    async with shoptet_http_client(_settings(tmp_path)) as http:
        answer = await _client(http, server.url).request(
            "PATCH", "/api/orders/1/status", params={"a": "b c"}, json={"statusId": -2}
        )
    assert answer["data"] == {
        "method": "PATCH",
        "target": "/api/orders/1/status?a=b+c",
        "body": '{"statusId":-2}',
    }


async def test_a_cookie_one_shop_got_is_never_sent_for_another(server: Server, tmp_path: Path) -> None:
    url = server.url.replace("127.0.0.1", "localhost")  # aiohttp's jar ignores cookies of IP hosts
    async with shoptet_http_client(_settings(tmp_path)) as http:
        await _client(http, url, "token-a").request("GET", "/cookie")
        await _client(http, url, "token-b").request("GET", "/api/orders/1")
        await _client(http, url, "token-a").request("GET", "/api/orders/2")
        assert not http.cookies
    assert server.cookies == [None, None, None]


async def test_each_token_has_three_requests_in_flight_and_connections_are_reused(
    server: Server, tmp_path: Path
) -> None:
    async with shoptet_http_client(_settings(tmp_path)) as http:
        limiter = LocalLimiter()  # the worker's one limiter, shared by every client
        clients = [_client(http, server.url, token, limiter) for token in ("token-a", "token-b")]
        calls = [client.request("GET", f"/api/orders/{i}") for i in range(12) for client in clients]
        answers = await asyncio.gather(*calls)
    assert len(answers) == 24
    assert server.peak == {"token-a": 3, "token-b": 3}  # the limiter's cap, reached and not passed
    assert server.connections == 6  # 24 requests over kept-alive connections


async def test_a_large_body_is_streamed_in_chunks(server: Server, tmp_path: Path) -> None:
    async with shoptet_http_client(_settings(tmp_path)) as http:
        client = _client(http, server.url)
        async with client.stream("/big") as response:
            sizes = [len(chunk) async for chunk in response.aiter_bytes()]
        assert sum(sizes) == Server.BIG
        assert len(sizes) > 1  # arrived piece by piece, not as one buffer
        assert (await client.request("GET", "/api/eshop"))["data"]["target"] == "/api/eshop"  # pool still usable


async def test_a_refused_connection_is_retryable(tmp_path: Path) -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    async with shoptet_http_client(_settings(tmp_path)) as http:
        with pytest.raises(RetryableError, match=r"Cannot connect to host 127\.0\.0\.1"):
            await _client(http, f"http://127.0.0.1:{port}").request("GET", "/api/eshop")


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 abc Weird\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    ],
)
async def test_a_garbled_answer_is_retryable(tmp_path: Path, answer: bytes) -> None:
    """What a flaky proxy in front of Shoptet may send: another try may get a real answer."""

    async def garble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    async with serving(garble) as url:
        async with shoptet_http_client(_settings(tmp_path)) as http:
            with pytest.raises(RetryableError, match="connection error"):
                await _client(http, url).request("GET", "/api/eshop")


async def test_a_slow_answer_is_a_retryable_timeout(server: Server, tmp_path: Path) -> None:
    server.delay = 1.0
    async with shoptet_http_client(_settings(tmp_path, shoptet_timeout_seconds=0.2)) as http:
        with pytest.raises(RetryableError, match="timeout"):
            await _client(http, server.url).request("GET", "/api/eshop")


async def test_downloads_from_another_host_leave_the_api_its_connections(server: Server, tmp_path: Path) -> None:
    """One cap for every host: result files read for minutes (on the e-shop's domain) took the pool,
    and API requests waited for a connection while holding their token's slot, until they timed out."""
    settings = _settings(tmp_path, shoptet_max_connections_per_host=2)
    elsewhere = server.url.replace("127.0.0.1", "localhost")  # another host, the same server
    async with shoptet_http_client(settings) as http, contextlib.AsyncExitStack() as downloads:
        for _ in range(2):  # the whole pool, as the old cap counted it: held open, not read
            await downloads.enter_async_context(http.stream("GET", f"{elsewhere}/big"))
        answer = await asyncio.wait_for(_client(http, server.url).request("GET", "/api/eshop"), 5)
    assert answer["data"]["target"] == "/api/eshop"


@pytest.mark.parametrize("reset", [False, True])
async def test_a_connection_dropped_after_the_request_is_unanswered(tmp_path: Path, reset: bool) -> None:
    """httpx-aiohttp calls a server that read the request and then closed (or reset) the
    connection a connect timeout: a relative stock change sent that way was retried, and applied
    twice, as if it had never gone out."""

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if reset:
            writer.transport.abort()  # RST
        else:
            writer.close()

    async with serving(drop) as url:
        async with shoptet_http_client(_settings(tmp_path)) as http:
            with pytest.raises(RetryableError) as raised:
                await _client(http, url).request("PATCH", "/api/stocks/1/movements", json={})
        assert raised.value.unanswered


async def test_a_refused_connection_never_went_out(tmp_path: Path) -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    async with shoptet_http_client(_settings(tmp_path)) as http:
        with pytest.raises(RetryableError) as raised:
            await _client(http, f"http://127.0.0.1:{port}").request("GET", "/api/eshop")
    assert not raised.value.unanswered


async def test_a_connection_that_never_opens_never_went_out(tmp_path: Path) -> None:
    """Packets dropped (a firewall, Shoptet unreachable): the whole-request deadline fired before the
    connect timeout, and a relative stock change that never left was reported as one Shoptet may
    have applied (sent to trash, for an operator to check stock by hand)."""
    import socket

    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)  # nobody accepts: once the backlog is full, connects wait for good
    port = full.getsockname()[1]
    waiting = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        waiting.append(filler)
    try:
        async with shoptet_http_client(_settings(tmp_path, shoptet_timeout_seconds=0.5)) as http:
            with pytest.raises(RetryableError) as raised:
                await _client(http, f"http://127.0.0.1:{port}").request("PATCH", "/api/stocks/1/movements", json={})
        assert not raised.value.unanswered, raised.value.message
    finally:
        for sock in (*waiting, full):
            sock.close()


async def test_a_writes_success_that_is_not_json_may_have_been_applied(tmp_path: Path) -> None:
    """A PHP notice before the JSON: retried as not yet answered, a relative stock change applied twice."""

    async def notice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b'<br><b>Deprecated</b>: something<br>{"data": null}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    async with serving(notice) as url:
        async with shoptet_http_client(_settings(tmp_path)) as http:
            client = _client(http, url)
            with pytest.raises(RetryableError, match="not JSON") as write:
                await client.request("PATCH", "/api/stocks/1/movements", json={})
            with pytest.raises(RetryableError, match="not JSON") as read:
                await client.request("GET", "/api/eshop")
        assert write.value.unanswered and not read.value.unanswered  # a read is simply asked again


@pytest.mark.parametrize(("status", "applied"), [(503, False), (504, True), (200, True)])
async def test_a_writes_answer_that_cannot_be_decoded_is_maybe_applied_only_when_it_succeeded(
    tmp_path: Path, status: int, applied: bool
) -> None:
    """A proxy's 503 page labelled gzip never reached Shoptet: taken for "maybe applied", a relative
    stock change went to trash instead of being retried. A 2xx that cannot be decoded was applied."""

    async def labelled_gzip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")), 0
        )
        await reader.readexactly(length)
        body = b"<html>not gzip</html>"
        writer.write(
            b"HTTP/1.1 %d X\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)
        )
        await writer.drain()
        writer.close()

    async with serving(labelled_gzip) as url:
        async with shoptet_http_client(_settings(tmp_path)) as http:
            with pytest.raises(RetryableError, match="could not be decoded") as raised:
                await _client(http, url).request("PATCH", "/api/stocks/1/movements", json={})
        assert (raised.value.unanswered, raised.value.status) == (applied, status)
