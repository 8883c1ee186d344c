"""``create_app``: the FastAPI application serving the Shoptet API, its OAuth server and ``/_sim/``."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from simulator.config import SimulatorConfig
from simulator.envelope import ShoptetError
from simulator.faults import hide_dropped_connection_tracebacks
from simulator.gateway import ShoptetGateway
from simulator.routes import admin, eshop, methods, oauth, orders, products, stocks, system, webhooks
from simulator.state import SimState


def create_app(config: SimulatorConfig) -> FastAPI:
    """Build a simulator app; its state (data, stats, credentials) is ``app.state.sim``."""
    state = SimState(config)
    hide_dropped_connection_tracebacks()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.webhooks.start()
        try:
            yield
        finally:
            await state.jobs.stop()
            await state.webhooks.stop()

    app = FastAPI(
        title="Shoptet API simulator", lifespan=lifespan, docs_url="/_sim/docs", openapi_url="/_sim/openapi.json"
    )
    app.state.sim = state
    modules = (eshop, orders, products, stocks, methods, webhooks, system, oauth, admin)
    for module in modules:
        app.include_router(module.router)

    @app.exception_handler(ShoptetError)
    async def shoptet_error(_: Request, error: ShoptetError) -> Response:
        return error.to_response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api/"):
            code = "not-found" if error.status_code == 404 else "http-error"
            return ShoptetError(error.status_code, code, str(error.detail), request.url.path).to_response()
        return JSONResponse({"detail": error.detail}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        if request.url.path.startswith("/api/"):
            return ShoptetError(400, "invalid-parameter", f"{where}: {first['msg']}", where).to_response()
        return JSONResponse({"detail": jsonable_encoder(error.errors())}, status_code=422)

    api_routes = [route for module in modules[:-2] for route in module.router.routes]
    app.add_middleware(ShoptetGateway, state=state, routes=api_routes)
    return app


def freeze_seeded_data() -> None:
    """Take the seeded shops out of the cyclic garbage collector's sight (for a simulator process).

    100,000 seeded orders are millions of objects; every full collection walked all of them and
    stalled requests that were due to be answered, adding latency that is not Shoptet's.
    """
    gc.collect()
    gc.freeze()
