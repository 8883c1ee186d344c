"""Starting a snapshot job: shared by ``/api/orders/snapshot`` and ``/api/products/snapshot``."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from starlette.responses import Response

from simulator.envelope import ShoptetError, envelope_response
from simulator.state import SimState
from simulator.store import Entity, EshopData


def start_snapshot(state: SimState, eshop: EshopData, endpoint: str, build: Callable[[], Iterable[Entity]]) -> Response:
    """202 ``{jobId}``; Shoptet refuses (403) when no ``job:finished`` webhook could announce the result."""
    if state.config.require_job_webhook and not state.webhooks.has(eshop.eshop_id, "job:finished"):
        raise ShoptetError(
            403,
            "missing-webhook",
            "Register the job:finished webhook before you call asynchronous endpoints.",
            "job:finished",
        )
    job = state.jobs.start(eshop, endpoint, build)
    return envelope_response({"jobId": job.job_id}, status=202)
