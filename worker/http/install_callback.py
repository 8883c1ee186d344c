"""``GET /shoptet/install?code=...``: Shoptet's call when an e-shop installs our addon.

The install is stored before the 200 goes out: Shoptet treats a 200 as "the addon is ready", and a
code can be exchanged only once, so answering first and failing later would lose the install.

Then the topologies with an ``installed`` start run for it (``webhooks-subscribe``: its webhooks),
so that e-shops installing the addon need nobody to run anything. A failure there does not undo
the install or its 200: it is logged for an operator, who runs them by hand.

Expects on ``request.app.state``: ``store`` (an InstallStore), ``settings`` (worker Settings) and
``http`` (a shared ``httpx.AsyncClient``); and ``starter`` (the worker's runtime) where processes
can be started.
"""

from __future__ import annotations

import asyncio

import httpx
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from applications.installs import AddonConfig, AddonNotConfigured, install_addon_from_code
from applications.oauth import OAuthError
from worker.envelope import H
from worker.runtime import Runtime
from worker.settings import Settings
from worker.starter import Starter, start_installed
from worker.store import Install, InstallStore
from worker.webhook_keys import has_signature_key, renew_signature_key

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
    starter: Starter | None = getattr(request.app.state, "starter", None)
    if starter is None:
        log.warning("no worker runtime here: the install's `installed` starts did not run", user=install.user)
    else:  # bounded: Shoptet must get its 200 while it still waits for it
        if isinstance(starter, Runtime):
            await _fetch_signature_key(starter, install, settings.webhook_publish_timeout_seconds)
        await _start_installed(starter, install, settings.webhook_publish_timeout_seconds)
    return JSONResponse(
        status_code=200,
        content={"status": "installed", "eshopId": install.eshop_id, "user": install.user},
    )


async def _fetch_signature_key(runtime: Runtime, install: Install, timeout: float) -> None:
    """Get the e-shop's webhook signature key now, unless a re-install kept one.

    The ingress answers 401 to a webhook it cannot verify, and ``addon:uninstall`` and its kin come
    whether or not any topology registers webhooks: without a key they were refused, and an
    uninstalled shop's install stayed enabled. ``webhooks-subscribe`` fetches one too, if deployed.
    A failure leaves the install as it is (that node, or a later install, fetches it).
    """
    try:
        stored = await runtime.store.get_install(install.user, install.application)
        if stored is None or has_signature_key(stored):
            return
        await asyncio.wait_for(renew_signature_key(runtime.shoptet_client(stored), runtime.store, stored), timeout)
    except Exception as exc:
        log.error(
            "the install's webhook signature key could not be fetched; its webhooks get 401 until "
            "webhooks-subscribe runs for it",
            user=install.user,
            error=str(exc) or type(exc).__name__,
        )


async def _start_installed(starter: Starter, install: Install, timeout: float) -> None:
    try:
        started = await asyncio.wait_for(start_installed(starter, install), timeout)
    except Exception as exc:  # the install is stored and stays: an operator starts these by hand
        log.error(
            "the install's `installed` starts failed; run them by hand (e.g. webhooks-subscribe)",
            user=install.user,
            error=str(exc) or type(exc).__name__,
        )
        return
    for message in started:
        log.info("started for the new install", user=install.user, topology=message.headers.get(H.TOPOLOGY_NAME))
