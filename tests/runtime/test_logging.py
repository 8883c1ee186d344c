"""Log lines carry the ids of the message being handled, and no secrets."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from worker.logging import bind_message, configure_logging


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The production JSON set-up, printing into a buffer instead of stderr."""
    saved = structlog.get_config()
    configure_logging("json", "INFO")
    buffer = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buffer))
    try:
        yield buffer
    finally:
        bind_message()
        structlog.configure(**saved)


def test_lines_logged_while_handling_a_message_carry_its_ids(json_logs: io.StringIO) -> None:
    log = structlog.get_logger("test")
    bind_message(correlation_id="corr-1", process_id="proc-1", node="detail", user="shop-1")
    log.info("calling shoptet", access_token="s3cret")
    bind_message()  # the next message: nothing of the previous one may stick
    log.info("idle")
    first, second = (json.loads(line) for line in json_logs.getvalue().splitlines())
    assert first["correlation_id"] == "corr-1"
    assert first["process_id"] == "proc-1"
    assert (first["node"], first["user"]) == ("detail", "shop-1")
    assert first["access_token"] == "***"
    assert "correlation_id" not in second and "user" not in second


def test_a_field_given_on_the_line_wins_over_the_message_field(json_logs: io.StringIO) -> None:
    bind_message(node="detail")
    structlog.get_logger("test").info("routed", node="list")
    assert json.loads(json_logs.getvalue())["node"] == "list"


def test_library_lines_are_json_with_the_message_ids_too(capsys: pytest.CaptureFixture[str]) -> None:
    """aiokafka, uvicorn and asyncio log through the standard library: in plain text, a JSON log
    pipeline split or dropped the very lines a broker or database incident needs."""
    import logging

    saved, saved_handlers = structlog.get_config(), logging.getLogger().handlers[:]
    configure_logging("json", "INFO")
    try:
        bind_message(correlation_id="corr-2", user="shop-2")
        try:
            raise ConnectionError("broker gone")
        except ConnectionError:
            logging.getLogger("aiokafka.consumer").warning("Heartbeat failed for group %s", "g", exc_info=True)
    finally:
        bind_message()
        structlog.configure(**saved)
        logging.getLogger().handlers = saved_handlers
    [line] = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record["event"] == "Heartbeat failed for group g"
    assert (record["level"], record["logger"]) == ("warning", "aiokafka.consumer")
    assert (record["correlation_id"], record["user"]) == ("corr-2", "shop-2")
    assert "ConnectionError: broker gone" in record["exception"]


def test_log_level_error_quiets_the_libraries_warnings_too(capsys: pytest.CaptureFixture[str]) -> None:
    """The libraries' level was pinned at WARNING: LOG_LEVEL=ERROR still printed every aiokafka
    warning."""
    import logging

    saved, saved_handlers, saved_level = structlog.get_config(), logging.getLogger().handlers[:], logging.root.level
    configure_logging("json", "ERROR")
    try:
        logging.getLogger("aiokafka.consumer").warning("Heartbeat failed")
        logging.getLogger("aiokafka.consumer").error("Unable to connect")
    finally:
        structlog.configure(**saved)
        logging.getLogger().handlers = saved_handlers
        logging.root.setLevel(saved_level)
    assert [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()] == ["Unable to connect"]


async def test_the_retry_forwarder_names_the_message_it_forwards() -> None:
    """Its lines (a record trashed for having no target) carried no message ids at all."""
    from types import SimpleNamespace
    from typing import Any

    from aiokafka.structs import ConsumerRecord

    from worker.logging import _MESSAGE_FIELDS
    from worker.retry import RetryForwarder

    class Store:
        async def add_trash(self, entry: Any) -> int:
            return 1

    class Ledger:
        async def add(self, tally: Any) -> None:
            return None

    headers = (("correlation-id", b"corr-9"), ("process-id", b"proc-9"), ("user", b"shop-9"))
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord("t.retry", 0, 1, 0, 0, b"shop-9", b"{}", None, 6, 2, headers)
    try:
        runtime = SimpleNamespace(store=Store(), producer=None, ledger=Ledger(), metrics=None)
        await RetryForwarder(runtime).handle(record)  # type: ignore[arg-type]
        fields = _MESSAGE_FIELDS.get() or {}
        assert (fields["correlation_id"], fields["process_id"], fields["user"]) == ("corr-9", "proc-9", "shop-9")
    finally:
        bind_message()
