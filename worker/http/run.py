"""``POST /topologies/{name}/run``: an operator starts a process by hand over HTTP.

Starting processes is a write into every e-shop the worker serves, so the endpoint is closed
unless ``API_KEY`` is configured, and the key is compared in constant time.
"""

from __future__ import annotations

import hmac
from typing import Any, Literal

import structlog
from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from applications.installs import ALIASES, application_name
from worker.errors import OutputTooLarge
from worker.http.webhooks import BodyTooLarge, read_limited, runtime_of, validation_problems
from worker.starter import ApplicationNeeded, InstallMissing, StartNotAcknowledged, TopologyNotRunnable, run_manual

log = structlog.get_logger(__name__)

router = APIRouter()


class RunRequest(BaseModel):
    """Whose process (``user``, the install; the Kafka key) and its first message's body."""

    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1)
    #: ``{}`` when not given, as with ``shoptet-worker run``: nodes take objects, and a null body
    #: that reached trash could not be replayed as it was.
    body: Any = Field(default_factory=dict)
    #: Whose install ``user`` is (``shoptet-premium`` or ``shoptet``, or ``premium``/``addon`` as the
    #: CLI takes them), for a topology naming none.
    application: Literal["shoptet-premium", "shoptet"] | None = None

    @field_validator("application", mode="before")
    @classmethod
    def _alias(cls, value: Any) -> Any:
        return application_name(value) if isinstance(value, str) and value in ALIASES else value


#: A run's body is the first message of a process, not a data transfer.
MAX_BODY_BYTES = 1 << 20


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"status": "error", "message": message})


def require_api_key(request: Request, x_api_key: str | None = Header(default=None)) -> None:
    """403 when no key is configured (endpoint disabled), 401 for a missing or wrong key.

    A dependency, so that it is checked before the body is read: callers without the key learn
    nothing about the endpoint's input and cannot make the worker buffer or parse anything.
    """
    settings = runtime_of(request).settings
    configured = settings.api_key.get_secret_value() if settings.api_key else ""
    if not configured:
        log.warning("manual run refused", reason="no API key configured", status=403)
        raise Refused(403, "manual runs over HTTP are disabled: set API_KEY to enable them")
    if not x_api_key or not hmac.compare_digest(configured.encode(), x_api_key.encode()):
        log.warning("manual run refused", reason="missing or invalid X-Api-Key", status=401)
        raise Refused(401, "missing or invalid X-Api-Key")


class Refused(HTTPException):
    """A refusal raised before the route runs (a dependency), answered in the routes' own shape
    ``{status: error, message}`` (see ``answer_refused``), not FastAPI's ``{detail}``."""


async def answer_refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refused)
    return _error(exc.status_code, str(exc.detail))


@router.post(
    "/topologies/{name}/run",
    status_code=202,
    dependencies=[Depends(require_api_key)],
    # the body is read by hand (see below); the schema still belongs in the API description
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": RunRequest.model_json_schema()}}}
    },
)
async def run_topology(name: str, request: Request) -> JSONResponse:
    """202 ``{process-id, correlation-id}`` once the broker acknowledged the first message.

    401/403 key; 404 unknown, disabled or without a manual start; 413 body over 1 MiB, or a first
    message over the broker's limit; 422 bad body, no application to tell whose install ``user``
    is, or no (enabled) such install; 503 broker failed; 202 ``status: pending`` with the process
    id when its start record is in and its first message is still being sent.

    The body is read here, not declared as a parameter: FastAPI reads and parses a declared body
    before it runs the key check, for anyone, and with no size limit.
    """
    rt = runtime_of(request)
    try:
        run = RunRequest.model_validate_json(await read_limited(request, MAX_BODY_BYTES))
    except BodyTooLarge:
        return _error(413, f"body over {MAX_BODY_BYTES} bytes")
    except ValidationError as exc:
        return _error(422, "; ".join(validation_problems(exc)))
    try:
        message = await run_manual(
            rt,
            name,
            user=run.user,
            body=run.body,
            application=run.application,
            installs=rt.installs.get,
            finish_later=rt.finish_later,
        )
    except TopologyNotRunnable as exc:
        log.warning("manual run refused", topology=name, reason=str(exc), status=404)
        return _error(404, str(exc))
    except (ApplicationNeeded, InstallMissing) as exc:
        log.warning("manual run refused", topology=name, reason=str(exc), status=422)
        return _error(422, str(exc))
    except OutputTooLarge as exc:
        log.warning("manual run refused", topology=name, reason=str(exc), status=413)
        return _error(413, str(exc))
    except StartNotAcknowledged as exc:
        # 202, not 503: clients retry a 503 by themselves (curl --retry), and each retry started
        # another process
        log.warning("manual run not acknowledged yet", topology=name, process_id=exc.message.process_id, status=202)
        return JSONResponse(
            status_code=202,
            content={"status": "pending", "message": str(exc), "process-id": exc.message.process_id},
        )
    except Exception as exc:
        log.error("manual run failed", topology=name, reason=f"{type(exc).__name__}: {exc}", status=503)
        return _error(503, "could not start the process; retry later")
    log.info("manual run started", topology=name, user=run.user, process_id=message.process_id)
    return JSONResponse(
        status_code=202,
        content={"process-id": message.process_id, "correlation-id": message.correlation_id},
    )
