"""The one place where Shoptet requests are made: auth, limiter, content type, status mapping.

Every node calls Shoptet through :class:`ShoptetClient`; nothing else builds Shoptet requests. It
maps HTTP outcomes to :mod:`worker.errors` exactly as the parity document's last section says:

- 2xx: success; the JSON envelope ``{data, errors, metadata}`` is returned (a 2xx that is not
  JSON, a proxy's page, is a :class:`RetryableError`).
- 401: the application drops its token; the call is repeated once with a new one (Shoptet says
  ``expired-token`` for an access token past its time and ``invalid-token`` for one it revoked:
  either way, "ask for another one").
- 400, 404, 409, 413, 422, 403 and other 4xx: :class:`StopError` with Shoptet's error body (the
  request's credentials taken out: a 403 quotes the token, see :mod:`applications.redaction`).
- 423: :class:`RetryableError` after a short wait (Shoptet's lock lasts at most 5 s).
- 429: :class:`RetryableError` honouring ``Retry-After`` (a date or seconds).
- 408, 5xx, timeouts, connection errors: :class:`RetryableError` with the node's backoff.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson
import structlog

from applications.base import Application
from applications.redaction import answer_without_credentials
from worker.envelope import encode_json
from worker.errors import RetryableError, StopError
from worker.limiter import Limiter
from worker.metrics import endpoint_label
from worker.store import Install

log = structlog.get_logger(__name__)

CONTENT_TYPE = "application/vnd.shoptet.v1.0"
#: Shoptet's identical-write lock lasts at most 5 s; coming back after it is enough.
LOCKED_RETRY_SECONDS = 5.0
RETRYABLE_STATUSES = frozenset({408, 423, 429})
#: A gateway's answer for Shoptet, which may have had the request (see ``RetryableError.unanswered``).
GATEWAY_FAILURES = frozenset({502, 504})


#: The longest ``Retry-After`` taken as given: an ordered node holds its install's messages that long.
MAX_RETRY_AFTER_SECONDS = 300.0


def _http_time(value: str | None) -> float | None:
    """An HTTP date as a Unix time (None when there is none, or it is not one)."""
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # the asctime form has no zone; HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from ``now`` (the answer's own ``Date``, so that this machine's
    clock does not skew it), at most :data:`MAX_RETRY_AFTER_SECONDS`; Shoptet sends an HTTP date,
    RFC 9110 also allows seconds."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not str.isdigit alone: "²" is a digit to it
        return min(float(value), MAX_RETRY_AFTER_SECONDS)
    when = _http_time(value)
    if when is None:
        return None
    return min(max(0.0, when - (time.time() if now is None else now)), MAX_RETRY_AFTER_SECONDS)


def _error_summary(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        parts = [f"{e.get('errorCode')}: {e.get('message')}" for e in body["errors"] if isinstance(e, dict)]
        if parts:
            return "; ".join(parts)
    return str(body)[:500] if body else ""


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except ValueError:
        return response.text[:2000]


#: (method, endpoint) pairs whose deprecation this process has logged.
_DEPRECATIONS_LOGGED: set[tuple[str, str]] = set()


def log_deprecation(method: str, response: httpx.Response) -> None:
    """Log, once per endpoint and process, that Shoptet will stop supporting it.

    Shoptet announces renamed or removed attributes with ``X-Shoptet-Deprecated`` and the end of
    support with a ``Sunset`` date, and asks clients to log them: unread, the first sign was the
    day every message of a node went to trash because an answer lacked a field."""
    deprecated = response.headers.get("X-Shoptet-Deprecated")
    sunset = response.headers.get("Sunset")
    if deprecated is None and sunset is None:
        return
    endpoint = endpoint_label(response.request.url.path)
    if (method, endpoint) in _DEPRECATIONS_LOGGED:
        return
    _DEPRECATIONS_LOGGED.add((method, endpoint))
    log.warning(
        "Shoptet deprecates this endpoint", method=method, endpoint=endpoint, deprecated=deprecated, sunset=sunset
    )


#: The whole-request limit of a client built without a read timeout.
DEFAULT_REQUEST_SECONDS = 30.0


def transport_failed(what: str, exc: httpx.TransportError, *, hide: str = "", shown: str = "") -> RetryableError:
    """No answer at all (refused, reset, timed out): worth another try later.

    The transport's own text says which (aiohttp's "Cannot connect to host ..." arrives as an
    httpx ``ConnectTimeout``, so the class name alone would mislead); ``hide`` in it is replaced by
    ``shown`` (a URL whose query must not reach logs and trash).
    """
    kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection error"
    detail = str(exc).replace(hide, shown) if hide else str(exc)
    return RetryableError(
        f"{what}: {kind} ({type(exc).__name__}{': ' + detail if detail else ''})",
        unanswered=isinstance(exc, SENT_UNANSWERED),
    )


#: Transport failures after the request went out: Shoptet may have acted on it (see ``unanswered``).
SENT_UNANSWERED = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)


def _where(location: str | None) -> str:
    """A redirect's target without what may be an access secret (a signed URL's query, a userinfo)."""
    if not location:
        return "nowhere"
    try:
        url = httpx.URL(location)
    except httpx.InvalidURL:
        return "an invalid location"
    return str(url.copy_with(query=None, fragment=None, userinfo=b""))


def _maybe_applied(method: str, status: int | None) -> bool:
    """Whether a write whose answer could not be read may have been applied all the same: Shoptet
    said it succeeded (a 2xx), or a gateway failed in front of it (as ``raise_for_status`` says)."""
    writes = method.upper() not in ("GET", "HEAD", "OPTIONS")
    return writes and status is not None and (200 <= status < 300 or status in GATEWAY_FAILURES)


def raise_for_status(response: httpx.Response) -> None:
    """Turn a non-2xx Shoptet answer into the error the runtime knows how to handle."""
    status = response.status_code
    if status < 300:
        return
    body = answer_without_credentials(response, _json_or_text(response))
    summary = f"{response.request.method} {response.request.url.path} -> {status} {_error_summary(body)}"
    if 300 <= status < 400:  # not followed (the token must not go elsewhere): say where it pointed
        summary = f"{summary.rstrip()} (redirected to {_where(response.headers.get('Location'))}, not followed)"
    if status == 429:
        wait = retry_after_seconds(response.headers.get("Retry-After"), now=_http_time(response.headers.get("Date")))
        raise RetryableError(summary, status=status, body=body, retry_after=wait)
    if status == 423:
        raise RetryableError(summary, status=status, body=body, retry_after=LOCKED_RETRY_SECONDS)
    if status in RETRYABLE_STATUSES or status >= 500:
        # a gateway's 502/504: Shoptet behind it may have acted on the request all the same
        raise RetryableError(summary, status=status, body=body, unanswered=status in GATEWAY_FAILURES)
    if status == 401:
        # Still 401 after a token refresh (or a premium token Shoptet rejects): retrying later
        # may help when the addon was just re-approved, so it is retryable with backoff.
        raise RetryableError(summary, status=status, body=body)
    raise StopError(summary, status=status, body=body)


class ShoptetClient:
    """Shoptet requests for one install through one application.

    Cheap to create per message: the connection pool (``http``) and the limiter are shared.
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        application: Application,
        install: Install,
        limiter: Limiter,
        base_url: str,
        on_response: Callable[[str, str, int], None] | None = None,
    ) -> None:
        #: Called with (method, path, status) for every answer, e.g. to count requests in metrics.
        self.on_response = on_response
        self.http = http
        self.application = application
        self.install = install
        self.limiter = limiter
        self.base_url = base_url.rstrip("/")

    def _request_seconds(self) -> float:
        """How long one whole request may take: the client's read timeout (SHOPTET_TIMEOUT_SECONDS),
        plus the wait for a connection (its pool timeout, which covers connecting). Without it, this
        deadline fired before the connect timeout on a connection that never opened (packets
        dropped), and a request that never left was reported as one Shoptet may have applied
        (relative stock changes sent to trash)."""
        timeout = self.http.timeout
        return (timeout.read or DEFAULT_REQUEST_SECONDS) + (timeout.pool or 0)

    def url(self, path_or_url: str) -> str:
        """API paths get the base URL; absolute URLs (job result files) are used as they are."""
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return f"{self.base_url}/{path_or_url.lstrip('/')}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> dict[str, Any]:
        """Send one request and return the decoded JSON envelope, or raise a node error."""
        response = await self._send(method, path, params=params, json=json)
        raise_for_status(response)
        if response.status_code == 204 or not response.content:
            return {"data": None, "errors": None}
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            # Shoptet answers JSON; a success page that is not (a proxy's or a maintenance page) is
            # not the answer yet: another try later, not trash. A write's 2xx says Shoptet applied
            # it all the same (a PHP notice before the JSON, a body cut short): tried again, a
            # relative stock change applied twice
            raise RetryableError(
                f"{method} {path}: answer is not JSON ({exc})",
                status=response.status_code,
                unanswered=_maybe_applied(method, response.status_code),
            ) from exc
        if not isinstance(body, dict):
            raise StopError(f"{method} {path}: expected a JSON object, got {type(body).__name__}")
        return body

    async def _send(self, method: str, path: str, *, params: Mapping[str, Any] | None, json: Any) -> httpx.Response:
        key = self.application.limiter_key(self.install)
        for attempt in (1, 2):
            headers = {"Content-Type": CONTENT_TYPE, "Accept": "application/json"}
            status: int | None = None  # once the answer's head is in
            try:
                async with self.limiter.slot(key):
                    # in the slot: an addon token read before a long wait for it could expire meanwhile
                    auth = await self.application.auth_headers(self.install)
                    headers.update(auth)
                    # the whole request: the client's timeout bounds each read only, and an answer
                    # that trickles in held one of the token's 3 connections for as long as it ran
                    async with asyncio.timeout(self._request_seconds()):
                        request = self.http.build_request(
                            method,
                            self.url(path),
                            params=params,
                            content=None if json is None else encode_json(json),
                            headers=headers,
                        )
                        # the head first: a body that cannot be decoded is judged by its status
                        response = await self.http.send(request, stream=True)
                        status = response.status_code
                        try:
                            await response.aread()
                        finally:
                            await response.aclose()
                    # inside the slot: the pace it reads must reach the token's next requests,
                    # which the slot's release lets in
                    self.limiter.observe(key, response.headers)
            except httpx.TransportError as exc:
                raise transport_failed(f"{method} {path}", exc) from exc
            except TimeoutError as exc:
                raise RetryableError(
                    f"{method} {path}: timeout (no whole answer within {self._request_seconds():g} s)",
                    unanswered=True,
                ) from exc
            except httpx.DecodingError as exc:  # a proxy's error page labelled gzip: no answer either
                raise RetryableError(
                    f"{method} {path}: answer could not be decoded ({exc})",
                    status=status,
                    unanswered=_maybe_applied(method, status),  # a write's success was applied all the same
                ) from exc
            if self.on_response is not None:
                self.on_response(method, response.request.url.path, response.status_code)
            log_deprecation(method, response)
            if attempt == 1 and response.status_code == 401:
                if await self.application.token_expired(self.install, auth):
                    continue
            return response
        return response

    def is_api(self, url: str) -> bool:
        """Whether ``url`` (a path, or absolute) is on the API's own origin: scheme, host and port."""
        target, api = httpx.URL(self.url(url)), httpx.URL(self.base_url)
        return (target.scheme, target.host, target.port) == (api.scheme, api.host, api.port)

    @asynccontextmanager
    async def stream(self, url: str) -> AsyncIterator[httpx.Response]:
        """Stream a (possibly absolute) URL, e.g. a snapshot job's gzipped result file.

        The token goes only to the API's own origin. A job's ``resultUrl`` is on the e-shop's domain
        and needs none (its name is its access); the URL comes from a message body, which a replay
        may have edited, and the token went to whatever host it named. Such a download is not an API
        request either, so it takes none of the token's 3 connections: a snapshot file of a million
        lines held one for minutes.
        """
        api = self.is_api(url)
        key = self.application.limiter_key(self.install)
        slot: AbstractAsyncContextManager[None] = self.limiter.slot(key) if api else nullcontext()
        try:
            async with slot:
                headers = await self.application.auth_headers(self.install) if api else {}
                async with self.http.stream("GET", self.url(url), headers=headers) as resp:
                    if api:
                        self.limiter.observe(key, resp.headers)
                    if resp.status_code >= 300:
                        await resp.aread()
                        raise_for_status(resp)
                    yield resp
        except httpx.TransportError as exc:
            # scheme, host and path only: a result file's query may be its signed access (and
            # aiohttp's own text names the URL, query and all)
            full = httpx.URL(self.url(url))
            where = full.copy_with(query=None, fragment=None)
            raise transport_failed(f"GET {where}", exc, hide=str(full), shown=str(where)) from exc
