"""The front door of the Shoptet API (``/api/...``): limits, auth, locks, latency, faults, stats.

A pure ASGI middleware rather than a FastAPI dependency, because the concurrency limits must hold
for the whole life of a request (latency included) and every answer, a 429 as much as a 200, must
carry ``X-RateLimit-Bucket-Filling`` and be counted. Order of checks, as at Shoptet's edge: per-IP
and per-token connections, leaky bucket, token, write lock; then injected faults and latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simulator.envelope import ShoptetError
from simulator.faults import DroppedConnection
from simulator.limits import BucketResult
from simulator.state import ADDON_HEADER, PREMIUM_HEADER, SimState
from simulator.timefmt import http_date

API_PREFIX = "/api/"
SHOPTET_CONTENT_TYPE = "application/vnd.shoptet.v1.0"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ESHOP_SCOPE_KEY = "sim.eshop"


def too_many(message: str, retry_after_seconds: float | None) -> Response:
    """A 429; ``Retry-After`` only when the leaky bucket is full (Shoptet: "only if bucket is
    fulfilled"), not for the connection limits, which answer without one."""
    headers = (
        {} if retry_after_seconds is None else {"Retry-After": http_date(time.time() + max(1.0, retry_after_seconds))}
    )
    error = ShoptetError(429, "too-many-requests", message, "rate-limit", headers=headers)
    return error.to_response()


class ShoptetGateway:
    def __init__(self, app: ASGIApp, state: SimState, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.state = state
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        state, stats = self.state, self.state.stats
        headers = Headers(scope=scope)
        token = headers.get(PREMIUM_HEADER) or headers.get(ADDON_HEADER) or ""
        client = scope.get("client")
        ip = client[0] if client else "unknown"
        if token and headers.get("content-type", "").split(";")[0].strip() != SHOPTET_CONTENT_TYPE:
            stats.wrong_content_type += 1
        result: dict[str, Any] = {"status": 500, "bucket": None}

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                result["status"] = message["status"]
                if result["bucket"] is not None:
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"], (b"x-ratelimit-bucket-filling", result["bucket"])]
            await send(message)

        on_token, on_ip = stats.enter(token, ip)
        lock_key: str | None = None
        try:
            early = self._admit(token, ip, on_token, on_ip, result)
            if early is None:
                try:
                    scope[ESHOP_SCOPE_KEY] = eshop = state.authenticate(headers)
                except ShoptetError as error:
                    early = error.to_response()
                else:
                    if scope["method"] in WRITE_METHODS:
                        lock_key = self._lock(scope, eshop.eshop_id)
                        if lock_key is None:
                            stats.locked += 1
                            early = ShoptetError(
                                423, "locked", "A write to this URL is already being processed.", scope["path"]
                            ).to_response()
            if early is None:
                early = await self._fault_or_latency(send_wrapped)
            if early is not None:
                await early(scope, receive, send_wrapped)
            else:
                await self.app(scope, receive, send_wrapped)
        except DroppedConnection:
            result["status"] = 0  # counted as status 0: no complete answer
            raise
        finally:
            stats.leave(token, ip)
            if lock_key is not None:
                state.locks.release(lock_key)
            stats.requests[(self._endpoint(scope), result["status"])] += 1

    def _admit(self, token: str, ip: str, on_token: int, on_ip: int, result: dict[str, Any]) -> Response | None:
        """Connection limits, then the bucket; a refused connection adds no drop but still reports the level."""
        config, stats = self.state.config, self.state.stats
        over_ip = on_ip > config.per_ip_limit
        over_token = bool(token) and on_token > config.per_token_limit
        bucket: BucketResult | None = None
        if config.bucket_enabled and token:
            bucket = self.state.buckets.add(
                token,
                time.monotonic(),
                config.bucket_size,
                config.bucket_drain_per_second,
                dry_run=over_ip or over_token,
            )
            result["bucket"] = f"{bucket.level}/{config.bucket_size}".encode()
        if over_ip:
            stats.rate_limited["ip"] += 1
            return too_many(f"Too many concurrent connections from your IP address (max {config.per_ip_limit}).", None)
        if over_token:
            stats.rate_limited["token"] += 1
            return too_many(f"Too many concurrent connections for this token (max {config.per_token_limit}).", None)
        stats.admitted(token, ip, on_token, on_ip)
        if bucket is not None and not bucket.accepted:
            stats.rate_limited["bucket"] += 1
            return too_many("Rate limit exceeded: the leaky bucket is full.", bucket.retry_after)
        return None

    def _lock(self, scope: Scope, eshop_id: int) -> str | None:
        """Lock the called URL for this write (None: another write holds it). Shoptet: "The lock is
        only valid for a specific called URL", and 423 "usually on an URL level ... try to avoid
        parallel update requests": keyed on the body as well, two different writes to one order
        both went through here, where Shoptet answers the second 423."""
        key = f"{eshop_id} {scope['method']} {scope['path']}?{scope['query_string'].decode()}"
        acquired = self.state.locks.acquire(key, time.monotonic(), self.state.config.lock_seconds)
        return key if acquired else None

    async def _fault_or_latency(self, send: Send) -> Response | None:
        config, stats = self.state.config, self.state.stats
        fault = self.state.faults.pick(config)
        if fault is not None:
            stats.faults[fault] += 1
        delay = config.latency_ms / 1000 + (config.slow_response_ms / 1000 if fault == "slow" else 0.0)
        if delay:
            await asyncio.sleep(delay)
        if fault == "500":
            return ShoptetError(500, "internal-error", "Internal server error (injected).").to_response()
        if fault == "503":
            return ShoptetError(503, "maintenance", "System maintenance (injected).").to_response()
        if fault == "429":
            stats.rate_limited["fault"] += 1
            return too_many("Too many requests (injected).", 1.0)
        if fault == "423":
            stats.locked += 1
            return ShoptetError(423, "locked", "The resource is locked (injected).").to_response()
        if fault == "drop":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
                }
            )
            await send({"type": "http.response.body", "body": b'{"data":', "more_body": True})
            raise DroppedConnection("injected dropped connection")
        return None

    def _endpoint(self, scope: Scope) -> str:
        """``GET /api/orders/{code}``: the route template, so stats do not grow with every code."""
        route = scope.get("route")
        path = getattr(route, "path", None)
        if path is None:
            for candidate in self.routes:
                match, _ = candidate.matches({**scope, "type": "http"})
                if match is Match.FULL:
                    path = getattr(candidate, "path", None)
                    break
        return f"{scope['method']} {path or 'unmatched'}"
