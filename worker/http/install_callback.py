"""``GET /shoptet/install?code=...``: Shoptet's call when an e-shop installs our addon.

The install is stored before the 200 goes out: Shoptet treats a 200 as "the addon is ready", and a
code can be exchanged only once, so answering first and failing later would lose the install.

Expects on ``request.app.state``: ``store`` (an InstallStore), ``settings`` (worker Settings) and
``http`` (a shared ``httpx.AsyncClient``).
"""

from __future__ import annotations

import httpx
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from applications.installs import AddonConfig, AddonNotConfigured, install_addon_from_code
from applications.oauth import OAuthError
from worker.settings import Settings
from worker.store import InstallStore

log = structlog.get_logger(__name__)

router = APIRouter()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"status": "error", "message": message})


@router.get("/shoptet/install")
async def shoptet_install(request: Request, code: str | None = None) -> JSONResponse:
    """Exchange the code for the e-shop's OAuth token, store the install, then answer 200.

    400: no code, or Shoptet refused the code (expired, used, wrong client); 502: the OAuth server
    failed or could not be reached; 503: the addon is not configured on this worker.
    """
    if not code:
        return _error(400, "missing query parameter 'code'")
    settings: Settings = request.app.state.settings
    store: InstallStore = request.app.state.store
    http: httpx.AsyncClient = request.app.state.http
    try:
        config = AddonConfig.from_settings(settings)
    except AddonNotConfigured as exc:
        log.error("addon install refused", reason=str(exc))
        return _error(503, str(exc))
    try:
        install = await install_addon_from_code(store, http, config, code)
    except OAuthError as exc:
        log.warning("addon install failed", reason=exc.message, oauth_status=exc.status)
        return _error(400 if exc.refused else 502, exc.message)
    log.info("addon installed", user=install.user, eshop_id=install.eshop_id)
    return JSONResponse(
        status_code=200,
        content={"status": "installed", "eshopId": install.eshop_id, "user": install.user},
    )
