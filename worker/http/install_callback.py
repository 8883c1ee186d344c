"""``GET /shoptet/install?code=...``: Shoptet's call when an e-shop installs our addon.

The install is stored before the 200 goes out: Shoptet treats a 200 as "the addon is ready", and a
code can be exchanged only once, so answering first and failing later would lose the install.

Then the topologies with an ``installed`` start run for it (``webhooks-subscribe``: its webhooks),
so that e-shops installing the addon need nobody to run anything. A failure there does not undo
the install or its 200: it is tried again after the answer for a while (a broker or Shoptet away
for a moment), and then logged for an operator, who runs them by hand.

Expects on ``request.app.state``: ``store`` (an InstallStore), ``settings`` (worker Settings) and
``http`` (a shared ``httpx.AsyncClient``); and ``starter`` (the worker's runtime) where processes
can be started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from applications.installs import AddonConfig, AddonNotConfigured, InstallNotStored, install_addon_from_code
from applications.oauth import OAuthError
from worker.errors import StopError
from worker.runtime import Runtime
from worker.settings import Settings
from worker.starter import Starter, installed_body, installed_starts, start_process, unread_installed_starts
from worker.store import Install, InstallStore
from worker.tasks import background_task, backoff_delays
from worker.topology import StartSpec, TopologyVersion
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
    except InstallNotStored as exc:
        # the code is spent: the e-shop installs the addon again once the store is back
        log.error("addon install lost: the store did not take it", eshop_id=exc.eshop_id, reason=str(exc))
        return _error(503, "the install could not be stored; install the addon again in a moment")
    log.info("addon installed", user=install.user, eshop_id=install.eshop_id)
    starter: Starter | None = getattr(request.app.state, "starter", None)
    if starter is None:
        log.warning("no worker runtime here: the install's `installed` starts did not run", user=install.user)
    else:
        # bounded: Shoptet must get its 200 while it still waits for it; what is not done by then
        # goes on after the answer (a broker or Shoptet away for a moment must not lose it)
        setting_up = background_task(_set_up(starter, install), name=f"set-up:{install.user}")
        done, _ = await asyncio.wait({setting_up}, timeout=settings.webhook_publish_timeout_seconds)
        if not done:
            log.warning("the new install's set-up goes on after the answer", user=install.user)
            if isinstance(starter, Runtime):  # a stop waits for it while the store is open
                starter.finish_later(_finished(setting_up), f"set-up of the new install {install.user}")
    return JSONResponse(
        status_code=200,
        content={"status": "installed", "eshopId": install.eshop_id, "user": install.user},
    )


#: How long the set-up of a new install (its signature key, its `installed` starts) is tried.
SET_UP_RETRY_SECONDS = 600.0
#: How long the key is tried before the starts go (webhooks-subscribe then fetches it itself).
KEY_RETRY_SECONDS = 60.0
SET_UP_RETRY_FIRST_SECONDS = 1.0
SET_UP_RETRY_MAX_SECONDS = 30.0


async def _set_up(starter: Starter, install: Install) -> None:
    """The new install's webhook signature key, then its ``installed`` starts (webhooks-subscribe),
    each tried again with backoff (a start that went through is not started again).

    The key comes first, for ``KEY_RETRY_SECONDS`` at most: webhooks-subscribe renews a missing key
    too, and two renewals at once left the store with the key Shoptet had just replaced (every
    webhook of the shop was then a 401). Past that, the starts go on and their node fetches it."""
    if isinstance(starter, Runtime):
        runtime = starter
        fetch = lambda: _fetch_signature_key(runtime, install)  # noqa: E731
        try:
            what = f"the new install's signature key (`shoptet-worker install renew-signature-key {install.user}`)"
            await _retrying(what, install, fetch, KEY_RETRY_SECONDS)
        except asyncio.CancelledError:
            for tv, _ in installed_starts(starter, install):
                log.error(
                    "a stop came before the new install's `installed` start; an operator runs it by hand",
                    user=install.user,
                    topology=tv.name,
                )
            raise
    unread = unread_installed_starts(starter, install)
    if unread:
        log.error(
            "deployed topologies this process cannot read did not get their `installed` starts; "
            "run them by hand for the install once their modules are importable here",
            user=install.user,
            topologies=unread,
        )
    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = []
    for tv, start in installed_starts(starter, install):

        async def start_it(tv: TopologyVersion = tv, start: StartSpec = start) -> None:
            await start_process(
                starter, tv, start, user=install.user, body=installed_body(install), application=install.application
            )
            log.info("started for the new install", user=install.user, topology=tv.name)

        steps.append((f"the `installed` start of {tv.name}", start_it))
    await asyncio.gather(*(_retrying(what, install, step, SET_UP_RETRY_SECONDS) for what, step in steps))


async def _retrying(what: str, install: Install, attempt: Callable[[], Awaitable[None]], for_seconds: float) -> None:
    """``attempt`` until it succeeds, a :class:`StopError` says it never will, or ``for_seconds``
    are up (logged for an operator, who runs it by hand)."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + for_seconds
    try:
        for delay in backoff_delays(SET_UP_RETRY_FIRST_SECONDS, SET_UP_RETRY_MAX_SECONDS):
            try:
                await attempt()
                return
            except StopError as exc:
                log.error(f"{what} failed; an operator runs it by hand", user=install.user, error=exc.message)
                return
            except Exception as exc:
                error = str(exc) or type(exc).__name__
                if loop.time() + delay >= give_up_at:
                    log.error(f"{what} failed; an operator runs it by hand", user=install.user, error=error)
                    return
                log.warning(f"{what} failed; trying again", user=install.user, error=error, retry_in=delay)
            await asyncio.sleep(delay)
    except asyncio.CancelledError:  # a stop: nothing tries it again after the restart
        log.error(f"{what} was cut short by a stop; an operator runs it by hand", user=install.user)
        raise


async def _finished(task: asyncio.Task[None]) -> None:
    await asyncio.wait({task})


async def _fetch_signature_key(runtime: Runtime, install: Install) -> None:
    """Get the e-shop's webhook signature key now, unless a re-install kept one.

    The ingress answers 401 to a webhook it cannot verify, and ``addon:uninstall`` and its kin come
    whether or not any topology registers webhooks: without a key they were refused, and an
    uninstalled shop's install stayed enabled. ``webhooks-subscribe`` fetches one too, if deployed.
    """
    stored = await runtime.store.get_install(install.user, install.application)
    if stored is None or has_signature_key(stored):
        return
    await renew_signature_key(runtime.shoptet_client(stored), runtime.store, stored)
