"""structlog set-up: readable in a terminal, JSON in production, context bound per message.

The processor binds ``correlation_id``, ``process_id``, ``topology``, ``node`` and ``user`` with
:func:`bind_message`, so every line a node or the client logs while handling a message carries
them. One context variable holds all of them: structlog's ``bind_contextvars`` keeps one variable
per key and ``clear_contextvars`` walks the whole context, which showed in per-message profiles.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

import structlog

_MESSAGE_FIELDS: ContextVar[Mapping[str, Any] | None] = ContextVar("shoptet_worker_message_fields", default=None)


def bind_message(**fields: Any) -> None:
    """Log fields of the message this task is handling now (replaces the previous message's)."""
    _MESSAGE_FIELDS.set(fields or None)


def _merge_message_fields(_: object, __: str, event_dict: structlog.types.EventDict) -> structlog.types.EventDict:
    for key, value in (_MESSAGE_FIELDS.get() or {}).items():
        event_dict.setdefault(key, value)
    return event_dict


_SECRET_KEYS = {"token", "secret", "password", "authorization", "access_token", "signature_key", "code"}


def _drop_secrets(_: object, __: str, event_dict: structlog.types.EventDict) -> structlog.types.EventDict:
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS or key.lower().endswith(("_token", "_secret", "_password")):
            event_dict[key] = "***"
    return event_dict


def configure_logging(fmt: str = "console", level: str = "INFO") -> None:
    """structlog for our lines; the libraries' stdlib lines (aiokafka, uvicorn, asyncio,
    SQLAlchemy) go through the same fields and renderer, so a JSON pipeline gets JSON from both
    (as plain text they split or dropped the very lines a broker or database incident needs)."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        _merge_message_fields,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secrets,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    # the libraries' info lines (every aiokafka fetch and rebalance step) drown ours: warnings at
    # least, and fewer when LOG_LEVEL asks for fewer
    root.setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
