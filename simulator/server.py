"""Run the simulator (or any ASGI app) with uvicorn on a free local port, in a background thread.

A thread with its own event loop, rather than a task on the caller's loop, so that a test or a
worker blocking its own loop never stalls the simulator, and sync code can use it too.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

from simulator.app import create_app
from simulator.config import SimulatorConfig
from simulator.state import SimState


class BackgroundServer:
    """An ASGI app served by uvicorn on ``host`` (a free port unless given) until ``stop()``.

    The port is bound at construction, so ``url`` is known before the app exists (the simulator
    needs its own URL for ``resultUrl``); ``app`` may be given then or set before ``start()``.
    """

    def __init__(
        self, app: ASGIApp | None = None, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        self.app = app
        self.host = host
        self.log_level = log_level
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
        # without it every answer waits ~40 ms for a delayed ACK (Nagle).
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(2048)
        self.port: int = self._sock.getsockname()[1]
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        assert self.app is not None, "set the app before starting"
        config = uvicorn.Config(
            self.app,
            log_level=self.log_level,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=1,
            backlog=2048,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._sock.close()


class SimulatorServer:
    """The simulator on 127.0.0.1 with a free port.

    ``async with SimulatorServer(config) as sim:`` (or ``with``, or ``start()``/``stop()``) gives
    ``sim.url`` (API base and OAuth server base at once) and ``sim.state`` (data and stats).
    """

    def __init__(self, config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config or SimulatorConfig()
        self._host, self._port = host, port
        self._background: BackgroundServer | None = None
        self._state: SimState | None = None

    @property
    def url(self) -> str:
        assert self._background is not None, "start the server first"
        return self._background.url

    @property
    def state(self) -> SimState:
        assert self._state is not None, "start the server first"
        return self._state

    def premium_token(self, index: int = 0) -> str:
        """The private API token of e-shop ``index`` (0-based)."""
        return self.state.eshops[index].premium_token

    def premium_tokens(self) -> dict[int, str]:
        """eshopId -> private API token, for every seeded e-shop."""
        return {e.eshop_id: e.premium_token for e in self.state.eshops}

    def start(self) -> SimulatorServer:
        background = BackgroundServer(host=self._host, port=self._port)
        if self.config.public_url is None:
            self.config = self.config.model_copy(update={"public_url": background.url})
        app = create_app(self.config)
        background.app = app
        self._state = app.state.sim
        self._background = background
        background.start()
        return self

    def stop(self) -> None:
        if self._background is not None:
            self._background.stop()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def __aenter__(self) -> SimulatorServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)
