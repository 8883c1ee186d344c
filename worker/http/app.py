"""The worker's HTTP app: health, readiness, metrics, Shoptet webhooks, manual runs, install callback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST

from worker.app import Worker
from worker.http.run import Refused, answer_refused
from worker.http.run import router as run_router
from worker.http.webhooks import router as webhooks_router
from worker.metrics import Metrics
from worker.runtime import Runtime

log = structlog.get_logger("http")

#: How long a scrape waits for the trash count before it answers with the last one.
TRASH_COUNT_WAIT_SECONDS = 1.0


class TrashCount:
    """The trash size for ``/metrics``, counted in the background, one count at a time.

    The last count stands when the store does not answer, refused or silent: a scrape that failed
    whole, or waited out Prometheus's timeout (a stalled database), lost every series (lag, retries)
    while the database was away, when they matter most. Each count sets the gauge when it ends,
    also after its scrape stopped waiting: a count slower than the wait never landed otherwise.
    """

    def __init__(self) -> None:
        self.counting: asyncio.Task[int] | None = None

    async def refresh(self, rt: Runtime) -> None:
        """Start a count unless one runs, and wait up to ``TRASH_COUNT_WAIT_SECONDS`` for it."""
        if self.counting is None or self.counting.done():
            metrics = rt.metrics
            self.counting = asyncio.ensure_future(rt.store.count_trash())
            self.counting.add_done_callback(lambda task: self._counted(task, metrics))
        done, _ = await asyncio.wait({self.counting}, timeout=TRASH_COUNT_WAIT_SECONDS)
        if not done:
            log.warning("trash size not refreshed yet: the store is slow to answer")

    @staticmethod
    def _counted(task: asyncio.Task[int], metrics: Metrics | None) -> None:
        if task.cancelled() or metrics is None:
            return
        error = task.exception()
        if error is not None:
            log.warning("trash size not refreshed: the store does not answer", error=str(error))
        else:
            metrics.trash_size.set(task.result())

    def cancel(self) -> None:
        if self.counting is not None:
            self.counting.cancel()


def create_http_app(worker: Worker) -> FastAPI:
    trash_count = TrashCount()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # the install callback reads these; the runtime exists once the worker has started
        if worker.runtime is not None:
            app.state.store = worker.runtime.store
            app.state.settings = worker.runtime.settings
            app.state.http = worker.runtime.http
            app.state.starter = worker.runtime
        try:
            yield
        finally:
            trash_count.cancel()

    app = FastAPI(title="shoptet-worker", version="0.1.0", lifespan=lifespan)
    app.state.worker = worker
    app.add_exception_handler(Refused, answer_refused)

    @app.get("/metrics")
    async def metrics() -> Response:
        rt = worker.runtime
        if rt is None or rt.metrics is None:
            return Response(status_code=503)
        await trash_count.refresh(rt)
        return Response(rt.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz(response: Response) -> dict[str, Any]:
        """503 once only a restart helps (a consumer loop ended, the embedded broker exited)."""
        problems = worker.problems()
        if problems:
            response.status_code = 503
            return {"status": "failing", "problems": problems}
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz(response: Response) -> dict[str, Any]:
        consumers = {c.name: c.assigned.is_set() and c.failure is None for c in worker.consumers}
        problems = worker.problems()
        ready = not problems and worker.ready.is_set() and all(c.assigned.is_set() for c in worker.readiness_consumers)
        if ready and not await worker.broker_answers():
            ready, problems = False, ["the broker does not answer"]
        response.status_code = 200 if ready else 503
        return {"ready": ready, "consumers": consumers, **({"problems": problems} if problems else {})}

    @app.get("/asyncapi.json")
    async def asyncapi() -> dict[str, Any]:
        """AsyncAPI 3.0 document of the topics and messages this worker uses (see worker/asyncapi.py)."""
        from worker.asyncapi import worker_asyncapi

        return worker_asyncapi(worker)

    app.include_router(webhooks_router)
    app.include_router(run_router)
    try:
        from worker.http.install_callback import router as install_router

        app.include_router(install_router)
    except ImportError:  # pragma: no cover
        pass
    return app
