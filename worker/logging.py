"""structlog set-up: readable in a terminal, JSON in production, context bound per message.

The consumer binds ``correlation_id``, ``process_id``, ``topology``, ``node`` and ``user`` with
contextvars, so every line a node or the client logs while handling a message carries them.
"""

from __future__ import annotations

import logging
import sys

import structlog

_SECRET_KEYS = {"token", "secret", "password", "authorization", "access_token", "signature_key", "code"}


def _drop_secrets(_: object, __: str, event_dict: structlog.types.EventDict) -> structlog.types.EventDict:
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS or key.lower().endswith(("_token", "_secret", "_password")):
            event_dict[key] = "***"
    return event_dict


def configure_logging(fmt: str = "console", level: str = "INFO") -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
