"""Inbound topics: another system (an ERP) writes to a topic, and each record starts a process.

The install's ``user`` is the record's ``user`` header, else its key; the value is the JSON body for
the start node. A record with neither, with a body that is not JSON, or too large to start a process
with, goes to trash with the reason.
A record with an ``application`` header (one a worker published: addon copies of the shipped
topologies write to the same sinks) starts only the topologies that serve that application, for it.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord

from worker.consumer import ManagedConsumer
from worker.envelope import MalformedMessage
from worker.errors import OutputTooLarge
from worker.logging import bind_message
from worker.runtime import Runtime
from worker.starter import find_start, start_inbound
from worker.topology import APPLICATIONS
from worker.trash import record_entry, record_headers

log = structlog.get_logger("inbound")


def install_of(record: ConsumerRecord[bytes, bytes]) -> bytes:
    """Whose record it is (its ``user`` header, else its key): the inbound consumer runs one record
    of an install at a time, whatever the producer keyed it by (keyless, every shop waited on one)."""
    for name, value in record.headers or ():
        if name == "user" and value:
            return bytes(value)
    return record.key or b""


class InboundBridge:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        #: The consumer that hands it records (the worker sets it): a start tried again once another
        #: topology of the record started gives the record up when its partition moved on.
        self.feed: ManagedConsumer | None = None

    def topics(self) -> list[str]:
        return sorted({s.topic for tv in self.rt.catalog.active_all() for s in tv.topology.start if s.topic})

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Start the record's processes, or put it in trash with the reason. Raises only for what
        may pass (the broker, the store down): the consumer tries the record again until it does."""
        headers = record_headers(record)  # a header without a value (an ERP's producer may send one) is ""
        application = headers.get("application") or None
        user = headers.get("user", "") or (record.key or b"").decode(errors="replace")
        bind_message(user=user or None, topic=record.topic)  # this runner's lines name the record
        try:
            body = read_body(record, user=user, application=application)
        except MalformedMessage as exc:
            await self._trash(record, str(exc))
            return
        feed, generation = self.feed, self.feed.generation if self.feed is not None else 0
        try:
            listening, started = await start_inbound(
                self.rt,
                record.topic,
                user=user,
                body=body,
                application=application,
                still_ours=None if feed is None else lambda: feed.generation == generation,
            )
        except (OutputTooLarge, MessageSizeTooLargeError) as exc:  # refused again on every retry
            reason = f"inbound record is too large to start a process with: {exc}"
            await self._trash(record, reason, error_class=type(exc).__name__)
            return
        if listening and not started and not self._disabled_would_serve(record.topic, application):
            log.info("inbound record of an application no topology here serves", application=application)
            return
        if not started:  # disabled meanwhile: kept for an operator to replay once it is enabled
            reason = (
                f"no active topology on topic {record.topic!r} serves application {application!r} (disabled?)"
                if listening
                else f"no active topology starts on topic {record.topic!r} (disabled?)"
            )
            # with the decoded body: `trash replay` sends it back as it came
            entry = record_entry(
                record, error_class="TopologyNotRunnable", error_message=reason, keep_raw=False, body=body
            )
            await self.rt.store.add_trash(entry)
            log.warning("inbound record moved to trash", reason=reason)
            self._count_trashed()

    def _disabled_would_serve(self, topic: str, application: str | None) -> bool:
        """A disabled topology on ``topic`` serves ``application``: its record waits in trash, as
        when every topology on the topic is disabled (dropped, an addon shop's records were lost
        while its copy of a topology was disabled and the premium one ran)."""
        return any(
            find_start(tv, "topic", topic) is not None and (application is None or tv.topology.serves(application))
            for tv in self.rt.catalog.disabled_all()
        )

    async def _trash(
        self, record: ConsumerRecord[bytes, bytes], reason: str, *, error_class: str = MalformedMessage.__name__
    ) -> None:
        entry_id = await self.rt.store.add_trash(record_entry(record, error_class=error_class, error_message=reason))
        log.warning("inbound record moved to trash", trash_id=entry_id, offset=record.offset, reason=reason)
        self._count_trashed()

    def _count_trashed(self) -> None:
        """In the trashed counter, as a node's trash: an alert on it missed every inbound record."""
        if self.rt.metrics is not None:
            self.rt.metrics.trashed("inbound")


def read_body(record: ConsumerRecord[bytes, bytes], *, user: str, application: str | None) -> Any:
    """The body of an inbound record for its start node; :class:`MalformedMessage` says why none.

    Parsed with orjson, as node topics are: ``json`` accepted a lone surrogate escape (a producer's
    emoji cut in half), which no encoder could write into the start message, and raised
    ``RecursionError`` on deep nesting; either escaped as a failure the consumer retried for ever,
    holding the partition's commits. orjson refuses both, with every other bad input, as JSON errors.
    """
    if not user:
        raise MalformedMessage(
            "inbound record names no install: set the `user` header or the key to the install's user"
        )
    try:
        body = orjson.loads(record.value or b"")
    except ValueError as exc:  # orjson.JSONDecodeError: bad JSON or UTF-8, a lone surrogate, nesting past 1024
        raise MalformedMessage(f"inbound record body is not JSON: {exc}") from exc
    if application is not None and application not in APPLICATIONS:
        raise MalformedMessage(f"inbound record names an unknown application {application!r}")
    return body
