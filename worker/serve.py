"""``shoptet-worker up``: the worker, its HTTP app and (with ``--demo``) a simulated shop, until a
signal asks to stop. SIGTERM and Ctrl-C stop gracefully: in-flight messages finish first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket

import structlog
import uvicorn

from worker.app import Worker
from worker.control import STATE_FILE, write_state
from worker.http.app import create_http_app
from worker.scheduler import Scheduler
from worker.settings import Settings

log = structlog.get_logger("serve")


#: How often ``up`` checks that its worker still works (see ``Worker.problems``).
WATCH_SECONDS = 2.0


class WorkerFailed(RuntimeError):
    """The worker stopped working in a way only a restart mends (a consumer loop ended, the
    embedded broker exited): ``up`` stops, and exits non-zero so that a supervisor restarts it."""


class PortInUse(RuntimeError):
    """The HTTP port is taken: said before anything starts (uvicorn would exit the process later,
    past the worker's graceful stop, leaving a stale ``var/worker.json``)."""


def bind_http(settings: Settings) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in settings.http_host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.http_host, settings.http_port))
    except OSError as exc:
        sock.close()
        raise PortInUse(
            f"cannot serve HTTP on {settings.http_host}:{settings.http_port} ({exc.strerror}): "
            "set HTTP_PORT, or stop what uses it (`up --no-http` runs without HTTP)"
        ) from None
    return sock


async def serve(settings: Settings, *, demo: bool = False, http: bool = True) -> None:
    sock = bind_http(settings) if http else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    demo_env = None
    if demo:
        from worker.demo import DemoEnvironment

        demo_env = DemoEnvironment(settings)
        settings = await demo_env.start()

    worker = Worker(settings)
    server: uvicorn.Server | None = None
    server_task: asyncio.Task[None] | None = None
    scheduler: Scheduler | None = None
    try:
        await worker.start(deploy_dir=settings.topology_dir)
        scheduler = Scheduler(worker.rt, f"{socket.gethostname()}:{os.getpid()}")
        scheduler.start()
        write_state(
            # a CLI command can tell a killed `up`, whose embedded broker died with it, from a running one
            pid=os.getpid(),
            embedded=worker.broker is not None,
            bootstrap_servers=worker.rt.bootstrap_servers,
            http=f"http://{settings.http_host}:{settings.http_port}",
        )
        if http:
            config = uvicorn.Config(
                create_http_app(worker),
                host=settings.http_host,
                port=settings.http_port,
                log_level="warning",
                log_config=None,
            )
            server = uvicorn.Server(config)
            server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
            server_task = asyncio.create_task(server.serve(sockets=[sock] if sock else None))
        watching = asyncio.create_task(_watch(worker, stop), name="watch")
        if demo_env is not None:
            await demo_env.run(worker, stop)
        await stop.wait()
        failed = watching.result() if watching.done() else None
        watching.cancel()
        if failed:
            log.error("stopping: the worker stopped working; restart it", problems=failed)
            raise WorkerFailed("; ".join(failed))
        log.info("stopping: finishing in-flight messages", graceful_timeout=settings.graceful_timeout_seconds)
    finally:
        if scheduler is not None:
            await scheduler.stop()
        if server is not None and server_task is not None:
            # uvicorn's own shutdown (lifespan included); cancelling it logged a CancelledError traceback
            server.should_exit = True
            try:
                await asyncio.wait_for(server_task, 10)
            except (TimeoutError, asyncio.CancelledError):
                server_task.cancel()
        await worker.stop()
        if demo_env is not None:
            await demo_env.stop()
        if sock is not None:
            sock.close()
        with contextlib.suppress(OSError):
            STATE_FILE.unlink()


async def _watch(worker: Worker, stop: asyncio.Event) -> list[str]:
    """Ask ``up`` to stop once the worker has a problem only a restart mends; returns it.

    Polled: a child process's exit sets no event in this loop."""
    while not (problems := worker.problems()):  # noqa: ASYNC110
        await asyncio.sleep(WATCH_SECONDS)
    stop.set()
    return problems
