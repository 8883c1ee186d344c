"""``POST /webhooks/shoptet/{application}``: Shoptet's webhook calls, verified, de-duplicated, started.

The answer tells Shoptet whether to deliver again, so it follows one rule: 200 only when nothing is
left to do (the event's processes are acknowledged by the broker, or the call is a duplicate or
for an e-shop we do not serve); 503 when the broker failed, so Shoptet's retry is not lost; 4xx
for calls that will never be valid. Every rejection is logged with its reason, never with a key
or the signature.

Expects ``request.app.state.worker`` (a started :class:`worker.app.Worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.lifecycle import ADDON_EVENTS, apply_addon_event, event_time
from worker.runtime import Runtime
from worker.starter import find_start, start_process
from worker.store import Install
from worker.tasks import all_to_their_end, wait_renewing
from worker.topology import APPLICATIONS, StartSpec, TopologyVersion
from worker.webhook_keys import SIGNATURE_HEADER, has_signature_key, verify_signature

log = structlog.get_logger(__name__)

router = APIRouter()

#: Applications with a webhook URL; a deployment may add others through ``rt.applications``.
KNOWN_APPLICATIONS = APPLICATIONS
#: An ``eventInstance`` longer than this names its deduplication lease by its hash.
MAX_PLAIN_INSTANCE_CHARS = 100
#: The store's lease names are at most this long.
MAX_LEASE_NAME_CHARS = 512


class WebhookPayload(BaseModel):
    """Shoptet's notification body. ``eshopId`` arrives as a number; it is compared as a string."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)
    eshopId: str = Field(min_length=1)
    event: str = Field(min_length=1)
    #: Required, but null is allowed (Shoptet's ``typeDateTimeNullable``).
    eventCreated: str | None
    eventInstance: str = Field(min_length=1)

    def dedup_key(self, application: str) -> str:
        """What makes two deliveries the same notification (Shoptet may deliver one twice).

        A long ``eventInstance`` (a mass event's list of codes) is named by its hash: whole, the
        key outgrew the lease column, and PostgreSQL refused every delivery of the event.

        Without ``eventCreated`` (null is allowed) a retry cannot be told from the next change of the
        same entity, which Shoptet sends with the same body: such a delivery is never a duplicate
        (a retry may start its processes twice; a later change is not lost)."""
        instance = self.eventInstance
        if len(instance) > MAX_PLAIN_INSTANCE_CHARS:
            instance = "sha256-" + hashlib.sha256(instance.encode()).hexdigest()
        created = self.eventCreated or f"undated-{uuid.uuid4().hex}"
        return f"webhook:{application}:{self.eshopId}:{self.event}:{instance}:{created}"


class BodyTooLarge(Exception):
    """The request body is over the configured limit."""


def runtime_of(request: Request) -> Runtime:
    """The started worker's runtime; 503 while the worker is still starting."""
    worker = request.app.state.worker
    if worker.runtime is None:
        raise HTTPException(status_code=503, detail="worker is starting")
    runtime: Runtime = worker.runtime
    return runtime


def _addressee(signed_for: list[Install], installs: list[Install]) -> Install:
    """The install a verified delivery is for: an enabled one whose key signed it; else another
    enabled install of the e-shop (the delivery is the e-shop's: a key one install renewed had left
    the others' stale, and the events were dropped while that install was disabled); else the one
    whose key signed it."""
    for candidates in (signed_for, installs):
        for install in candidates:
            if install.enabled:
                return install
    return signed_for[0]


def _answer(status: int, state: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"status": state, "message": message, **extra})


async def read_limited(request: Request, limit: int) -> bytes:
    """The raw body (the bytes the signature covers), refusing to buffer more than ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def parse_payload(body: bytes) -> tuple[WebhookPayload, dict[str, Any]]:
    """The validated payload and the JSON object as sent (which is what the process receives)."""
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("the body is not a JSON object")
    return WebhookPayload.model_validate(data), data


def listeners(rt: Runtime, application: str, event: str) -> list[tuple[TopologyVersion, StartSpec]]:
    """Every active topology of this application (or of none) that starts on ``event``."""
    found = []
    for tv in rt.catalog.active_all():
        if not tv.topology.serves(application):
            continue
        start = find_start(tv, "webhook", event)
        if start is not None:
            found.append((tv, start))
    return found


async def publish_event(rt: Runtime, install: Install, body: dict[str, Any], event: str, delivery: str) -> list[str]:
    """Start every listening process; returns once the broker acknowledged all of them.

    Each start that went through is recorded under the ``delivery`` (its dedup key): when another
    failed, Shoptet's retry of the delivery starts only the ones still missing (started again, the
    others ran twice). Returns the process ids started by this call."""

    async def start_one(tv: TopologyVersion, start: StartSpec) -> str | None:
        done = _started_lease(delivery, tv.name)
        if await rt.store.lease_holder(done) is not None:
            return None  # an earlier attempt of this delivery started it
        message = await start_process(rt, tv, start, user=install.user, body=body, application=install.application)
        await rt.store.acquire_lease(done, STARTED_OWNER, rt.settings.webhook_dedup_window_seconds)
        return message.process_id

    # every start to its end before a failure is answered: the retry must find the others recorded
    started = await all_to_their_end(*(start_one(tv, start) for tv, start in listeners(rt, install.application, event)))
    return [process_id for process_id in started if process_id is not None]


#: Owner of the leases that record a delivery's started processes (see ``publish_event``).
STARTED_OWNER = "ingress:started"


def _started_lease(delivery: str, topology: str) -> str:
    """The lease recording that ``delivery`` started ``topology`` (hashed past the column's size)."""
    name = f"{delivery}:started:{topology}"
    if len(name) > MAX_LEASE_NAME_CHARS:
        name = "webhook-started:sha256-" + hashlib.sha256(name.encode()).hexdigest()
    return name


@router.post("/webhooks/shoptet/{application}")
async def shoptet_webhook(application: str, request: Request) -> JSONResponse:
    """Verify, de-duplicate and start the processes that listen to the event.

    200 accepted / duplicate / ignored (unknown or disabled e-shop); 400 malformed; 401 bad,
    missing or unverifiable signature; 404 unknown application; 413 too large; 503 broker failed,
    or the same delivery is still being handed over by an earlier request.
    """
    rt = runtime_of(request)
    settings = rt.settings
    bound = log.bind(application=application)
    if application not in KNOWN_APPLICATIONS and application not in rt.applications:
        bound.warning("webhook rejected", reason="unknown application", status=404)
        return _answer(404, "error", f"unknown application {application!r}")
    try:
        raw = await read_limited(request, settings.webhook_max_body_bytes)
    except BodyTooLarge:
        bound.warning("webhook rejected", reason="body too large", limit=settings.webhook_max_body_bytes, status=413)
        return _answer(413, "error", f"body over {settings.webhook_max_body_bytes} bytes")
    try:
        payload, body = parse_payload(raw)
    except (ValueError, ValidationError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        reason = _reason(exc)
        bound.warning("webhook rejected", reason=reason, status=400)
        return _answer(400, "error", reason)

    bound = bound.bind(eshop_id=payload.eshopId, webhook_event=payload.event, event_instance=payload.eventInstance)
    installs = await rt.store.installs_of_eshop(payload.eshopId, application)
    if not installs:
        bound.warning("webhook ignored", reason="unknown e-shop")
        return _answer(200, "ignored", "unknown e-shop")
    if not any(has_signature_key(candidate) for candidate in installs):
        bound.warning("webhook rejected", reason="signature key missing for the install", status=401)
        return _answer(401, "error", "signature cannot be verified")
    signature = request.headers.get(SIGNATURE_HEADER)
    now = datetime.now(UTC)
    # an e-shop installed under two users: the install whose key signed it (enabled ones first)
    signed_for = [i for i in installs if verify_signature(raw, signature, i, now, settings.signature_key_grace_seconds)]
    if not signed_for:
        reason = "signature mismatch" if signature else "signature missing"
        bound.warning("webhook rejected", reason=reason, status=401)
        return _answer(401, "error", "invalid signature")
    is_addon_event = payload.event in ADDON_EVENTS
    # an addon event is about the install whose key signed it (a suspended one gets its approve)
    install = signed_for[0] if is_addon_event else _addressee(signed_for, installs)
    bound = bound.bind(user=install.user)

    if is_addon_event and _predates_install(payload.eventCreated, install):
        # a retry of an uninstall (or suspend) that failed before the e-shop installed the addon
        # again: applied now, it would remove or disable the new install
        bound.warning("webhook ignored", reason="addon event from before the current install")
        return _answer(200, "ignored", "the event predates the current install")
    if not install.enabled and not is_addon_event:
        bound.warning("webhook ignored", reason="install disabled")
        return _answer(200, "ignored", "install disabled")
    lease, owner = payload.dedup_key(application), f"{HANDING_OVER}{uuid.uuid4().hex}"
    try:
        claimed = await _claim(rt, lease, owner)
    except InFlight:
        bound.warning("webhook deferred", reason="the same delivery is being handed over", status=503)
        return _answer(503, "in-flight", "the same delivery is being handed over; retry later")
    if not claimed:
        bound.info("webhook duplicate", reason="already received within the dedup window")
        return _answer(200, "duplicate", "already received")
    handing_over = HandOver(rt, lease, owner, bound)
    # publish before applying: an uninstall removes the install these processes are keyed by
    publishing = asyncio.ensure_future(_publish_and_apply(rt, install, body, payload, application, lease))
    try:
        done, _ = await asyncio.wait({publishing}, timeout=settings.webhook_publish_timeout_seconds)
    except BaseException:
        handing_over.finish_later(publishing)  # cancelled (shutdown, client gone): it may still go
        raise
    if not done:
        # the starts may still reach the broker: given up here (lease let go), Shoptet's retry
        # started them again; until the broker answers, its retries are told to come back later
        handing_over.finish_later(publishing)
        bound.warning("webhook deferred", reason="the broker has not acknowledged the starts yet", status=503)
        return _answer(503, "in-flight", "the broker has not acknowledged the event yet; retry later")
    if publishing.cancelled():  # a start cancelled before the broker had it: Shoptet's retry must get in
        with contextlib.suppress(Exception):
            await rt.store.release_lease(lease, owner)
        raise asyncio.CancelledError
    try:
        process_ids = publishing.result()
    except Exception as exc:
        await rt.store.release_lease(lease, owner)  # Shoptet's retry must not be taken for a duplicate
        bound.error("webhook failed", reason=f"{type(exc).__name__}: {exc}", status=503)
        return _answer(503, "error", "could not hand the event over; retry later")
    await handing_over.accepted()
    bound.info("webhook accepted", processes=len(process_ids))
    return _answer(200, "accepted", f"{len(process_ids)} process(es) started", processIds=process_ids)


async def _publish_and_apply(
    rt: Runtime, install: Install, body: dict[str, Any], payload: WebhookPayload, application: str, payload_key: str
) -> list[str]:
    process_ids = await publish_event(rt, install, body, payload.event, payload_key)
    if payload.event in ADDON_EVENTS:
        created = event_time(payload.eventCreated)
        await apply_addon_event(rt.store, application, payload.eshopId, payload.event, created)
    return process_ids


class HandOver:
    """A delivery's lease while its starts go to the broker, and what becomes of it after."""

    def __init__(self, rt: Runtime, lease: str, owner: str, log: Any) -> None:
        self.rt, self.lease, self.owner, self.log = rt, lease, owner, log

    async def accepted(self) -> None:
        """From now on, Shoptet's retries of this delivery are duplicates."""
        settings = self.rt.settings
        try:
            accepted = f"ingress:accepted:{self.owner}"
            if not await self.rt.store.hand_over_lease(
                self.lease, self.owner, accepted, settings.webhook_dedup_window_seconds
            ):
                # the hand-over outlived its lease: a repeat may have taken it and started them again
                self.log.warning("webhook accepted after its hand-over lease expired; it may have started twice")
        except Exception as exc:  # the processes are started: the 200 stands; a retry may start them again
            self.log.warning(
                "webhook accepted; its duplicates may not be recognized", error=f"{type(exc).__name__}: {exc}"
            )

    def finish_later(self, publishing: asyncio.Future[list[str]]) -> None:
        """Keep the lease until the broker answers the starts, then accept them or let go (a stop
        waits for it while the store is open: left behind, the lease expired and Shoptet's retry
        started the processes a second time)."""
        self.rt.finish_later(self._finish(publishing), f"webhook hand-over ({self.lease})")

    async def _finish(self, publishing: asyncio.Future[list[str]]) -> None:
        ttl = self.rt.settings.webhook_publish_timeout_seconds + HAND_OVER_MARGIN_SECONDS
        # still on its way: the lease keeps Shoptet's retries out
        await wait_renewing(publishing, ttl / 2, lambda: self.rt.store.acquire_lease(self.lease, self.owner, ttl))
        if publishing.cancelled() or publishing.exception() is not None:
            with contextlib.suppress(Exception):
                await self.rt.store.release_lease(self.lease, self.owner)  # Shoptet's retry gets in
            self.log.warning("webhook hand-over failed after its answer; Shoptet's retry will start it")
            return
        await self.accepted()
        self.log.info("webhook accepted after its answer", processes=len(publishing.result()))


#: Owner prefix of a delivery's lease while its processes are handed to the broker.
HANDING_OVER = "ingress:handing-over:"
#: How long a hand-over may hold its lease past the publish timeout (store calls, an addon event).
HAND_OVER_MARGIN_SECONDS = 30.0


class InFlight(Exception):
    """The same delivery is being handed over by another request right now."""


async def _claim(rt: Runtime, lease: str, owner: str) -> bool:
    """Take the delivery's lease for its hand-over; False for a delivery already accepted.

    Raises :class:`InFlight` while another request hands the same delivery over: Shoptet, or a proxy,
    may give up on a slow first attempt and deliver again, and a 200 then would lose the event if
    the first attempt failed. The hand-over holds the lease only for about its publish timeout, so
    one that died with its process does not turn Shoptet's retries away for the dedup window.
    """
    ttl = rt.settings.webhook_publish_timeout_seconds + HAND_OVER_MARGIN_SECONDS
    for _ in range(2):  # once more when the holder let go between the two calls
        if await rt.store.acquire_lease(lease, owner, ttl):
            return True
        holder = await rt.store.lease_holder(lease)
        if holder is None:
            continue
        if holder.startswith(HANDING_OVER):
            raise InFlight
        return False
    raise InFlight


def _predates_install(event_created: str | None, install: Install) -> bool:
    """Whether Shoptet created the event before the install was added; False when unknown."""
    created = event_time(event_created)
    return install.installed_at is not None and created is not None and created < install.installed_at


def validation_problems(exc: ValidationError) -> list[str]:
    """Each problem of a request body as ``field: message`` (``body`` for the body as a whole)."""
    return [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()]


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return validation_problems(exc)[0]
    if isinstance(exc, json.JSONDecodeError):
        return f"malformed JSON: {exc.msg}"
    if isinstance(exc, RecursionError):
        return "malformed JSON: nested too deep"
    return str(exc)
