"""Helpers for the simulator tests: request headers, a webhook receiver, waiting on another thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulator.server import BackgroundServer

CONTENT_TYPE = "application/vnd.shoptet.v1.0"


def premium_headers(token: str) -> dict[str, str]:
    return {"Shoptet-Private-API-Token": token, "Content-Type": CONTENT_TYPE}


def addon_headers(token: str) -> dict[str, str]:
    return {"Shoptet-Access-Token": token, "Content-Type": CONTENT_TYPE}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A webhook endpoint: records every call; answers 500 to the first ``fail_first`` of them."""

    def __init__(self) -> None:
        self.calls: list[Received] = []
        self.fail_first = 0
        self._changed = threading.Condition()
        self.server = BackgroundServer(Starlette(routes=[Route("/{path:path}", self._hook, methods=["POST"])]))

    @property
    def url(self) -> str:
        return self.server.url

    async def _hook(self, request: Request) -> Response:
        call = Received(request.url.path, dict(request.headers), await request.body())
        with self._changed:
            self.calls.append(call)
            failing = len(self.calls) <= self.fail_first
            self._changed.notify_all()
        return Response(status_code=500 if failing else 200)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Block (in a worker thread) until ``count`` calls arrived; fails the test on timeout."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self.calls) >= count, timeout)
        assert arrived, f"expected {count} webhook calls, got {len(self.calls)}"
        return list(self.calls)


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for state another thread settles (e.g. a webhook delivery recorded after its answer)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)
