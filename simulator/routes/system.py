"""``GET /api/system/jobs/{jobId}`` and the job result files its ``resultUrl`` points at."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from simulator.envelope import envelope_response, not_found
from simulator.jobs import RESULT_PATH
from simulator.routes.deps import current_eshop, get_state
from simulator.state import SimState
from simulator.store import EshopData

router = APIRouter()


@router.get("/api/system/jobs/{jobId}")
async def job_detail(
    jobId: str, request: Request, eshop: EshopData = Depends(current_eshop), state: SimState = Depends(get_state)
) -> Response:
    job = state.jobs.jobs.get(jobId)
    if job is None or job.eshop_id != eshop.eshop_id:
        raise not_found("job-not-found", f'Job "{jobId}" not found.', jobId)
    # resultUrl is absolute: the configured public URL, else the address this request came to
    return envelope_response({"job": job.to_api(state.config.public_url or str(request.base_url))})


@router.get(RESULT_PATH + "/{jobId}.jsonl.gz")
async def job_result(jobId: str, state: SimState = Depends(get_state)) -> Response:
    """The result file, like Shoptet's signed download URL: no token needed, gzipped JSON Lines."""
    job = state.jobs.jobs.get(jobId)
    if job is None or job.result is None:
        return Response(status_code=404)
    return Response(job.result, media_type="application/gzip")
