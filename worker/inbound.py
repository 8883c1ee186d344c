"""Inbound topics: another system (an ERP) writes to a topic, and each record starts a process.

The install's ``user`` is the record's ``user`` header, else its key; the value is the JSON body for
the start node. A record with neither, or with a body that is not JSON, goes to trash with the reason.
A record with an ``application`` header (one a worker published: addon copies of the shipped
topologies write to the same sinks) starts only the topologies that serve that application, for it.
"""

from __future__ import annotations

import json

import structlog
from aiokafka.structs import ConsumerRecord

from worker.logging import bind_message
from worker.runtime import Runtime
from worker.starter import start_inbound
from worker.topology import APPLICATIONS
from worker.trash import record_entry, record_headers

log = structlog.get_logger("inbound")


class InboundBridge:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def topics(self) -> list[str]:
        return sorted({s.topic for tv in self.rt.catalog.active_all() for s in tv.topology.start if s.topic})

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        reason = None
        body = None
        headers = record_headers(record)  # a header without a value (an ERP's producer may send one) is ""
        user_header = headers.get("user", "")
        application = headers.get("application") or None
        user = user_header or (record.key or b"").decode(errors="replace")
        bind_message(user=user or None, topic=record.topic)  # this runner's lines name the record
        if not user:
            reason = "inbound record names no install: set the `user` header or the key to the install's user"
        else:
            try:
                body = json.loads(record.value or b"")
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                reason = f"inbound record body is not JSON: {exc}"
        if reason is None and application is not None and application not in APPLICATIONS:
            reason = f"inbound record names an unknown application {application!r}"
        if reason is not None:
            await self._trash(record, reason)
            return
        listening, started = await start_inbound(self.rt, record.topic, user=user, body=body, application=application)
        if listening and not started:
            log.info("inbound record of an application no topology here serves", application=application)
            return
        if not started:  # disabled meanwhile: kept for an operator to replay once it is enabled
            reason = f"no active topology starts on topic {record.topic!r} (disabled?)"
            # with the decoded body: `trash replay` sends it back as it came
            entry = record_entry(
                record, error_class="TopologyNotRunnable", error_message=reason, keep_raw=False, body=body
            )
            await self.rt.store.add_trash(entry)
            log.warning("inbound record moved to trash", reason=reason)

    async def _trash(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        entry_id = await self.rt.store.add_trash(
            record_entry(record, error_class="MalformedMessage", error_message=reason)
        )
        log.warning("inbound record moved to trash", trash_id=entry_id, offset=record.offset, reason=reason)
