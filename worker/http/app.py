"""The worker's HTTP app: health and readiness now; webhooks, install callback, metrics grow here."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response

from worker.app import Worker


def create_http_app(worker: Worker) -> FastAPI:
    app = FastAPI(title="shoptet-worker", version="0.1.0")
    app.state.worker = worker

    @app.on_event("startup")
    async def _bind_runtime() -> None:  # runtime exists once the worker started
        if worker.runtime is not None:
            app.state.store = worker.runtime.store
            app.state.settings = worker.runtime.settings
            app.state.http = worker.runtime.http

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz(response: Response) -> dict[str, Any]:
        consumers = {c.name: c.assigned.is_set() for c in worker.consumers}
        ready = worker.ready.is_set() and all(consumers.values())
        response.status_code = 200 if ready else 503
        return {"ready": ready, "consumers": consumers}

    try:
        from worker.http.install_callback import router as install_router

        app.include_router(install_router)
    except ImportError:  # pragma: no cover
        pass
    return app
