"""Reading a sink topic in tests, and running a worker in a child process that can be killed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from worker.envelope import Message


@dataclass
class SinkReader:
    """Every message of a topic, read from the beginning on each call (so counts are exact)."""

    bootstrap: str
    topic: str
    messages: list[Message] = field(default_factory=list)

    async def collect_until(self, predicate: Any, timeout: float = 120.0) -> list[Message]:
        """Read the topic from its beginning until ``predicate(messages)`` holds; returns all read.

        The embedded broker (Tansu 0.6.0) can hide a record from a reader that follows a partition
        while two processes write to it at once: the record is stored, a read from the start returns
        it, but the live reader has moved past its offset (``python -m bench.tansu_live_read``). So
        after ``RECHECK_AFTER_QUIET_SECONDS`` without a new record, a second reader reads the topic
        from the start, and its messages count when they meet the predicate.
        """
        self.messages = []
        consumer = _reader(self.bootstrap, self.topic)
        await consumer.start()
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        try:
            while not predicate(self.messages):
                now = time.monotonic()
                if now - quiet_since > RECHECK_AFTER_QUIET_SECONDS:
                    quiet_since = now
                    again = await self.read_all()
                    if predicate(again):
                        self.messages = again
                        break
                if now > deadline:
                    raise TimeoutError(f"{self.topic}: condition not met, {len(self.messages)} message(s) seen")
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    quiet_since = time.monotonic()
                    self.messages.extend(_decoded(records))
        finally:
            await consumer.stop()
        return self.messages

    async def read_all(self) -> list[Message]:
        """Every message the topic holds now (up to its end when called), read from the start.

        For counting duplicates: ``collect_until`` stops as soon as its predicate holds, before a
        duplicate that lands after the last new item. Bounded by the partitions' ends, it also
        returns while a running process still writes to the topic. The end is the high watermark of
        the first fetch: the embedded broker's ListOffsets answers the last batch's base offset + 1,
        short of the end by the batch's other records (``end_offsets`` tells only which partitions
        hold anything)."""
        consumer = _reader(self.bootstrap, self.topic)
        await consumer.start()
        messages: list[Message] = []
        try:
            partitions = consumer.partitions_for_topic(self.topic) or set()
            ends = await consumer.end_offsets([TopicPartition(self.topic, p) for p in partitions])
            left: dict[TopicPartition, int | None] = {tp: None for tp, end in ends.items() if end > 0}
            empty = 0
            while left and empty < 2:  # two empty fetches in a row: nothing more is coming
                batches = await consumer.getmany(timeout_ms=500)
                empty = 0 if batches else empty + 1
                for tp, records in batches.items():
                    if tp not in left:
                        continue
                    end = left[tp]
                    if end is None:
                        end = left[tp] = max(consumer.highwater(tp) or 0, ends[tp])
                    messages.extend(_decoded([r for r in records if r.offset < end]))
                    if records[-1].offset + 1 >= end:
                        del left[tp]
        finally:
            await consumer.stop()
        return messages


#: How long a reader waits for a new record before it checks the topic from the start again.
RECHECK_AFTER_QUIET_SECONDS = 10.0


def _reader(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)


def _decoded(records: list[ConsumerRecord[bytes, bytes]]) -> list[Message]:
    return [Message.decode(r.value, r.headers or [], required=()) for r in records]


def distinct_items(messages: list[Message]) -> set[int]:
    return {int(m.body["n"]) for m in messages}


WORKER_SCRIPT = """
import asyncio, os, sys
from pathlib import Path
from worker.app import Worker
from worker.logging import configure_logging
from worker.settings import Settings
from worker.topology import load_topology_file

async def main() -> None:
    configure_logging("console", os.environ.get("LOG_LEVEL", "WARNING"))
    settings = Settings()
    worker = Worker(settings, node_names=sys.argv[2].split(","))
    stop = asyncio.Event()
    import signal
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await worker.start(deploy=[load_topology_file(Path(sys.argv[1]), worker.registry)])
    print("READY", flush=True)
    await stop.wait()
    await worker.stop()
    print("STOPPED", flush=True)

asyncio.run(main())
"""


def spawn_worker(env: dict[str, str], topology: Path, nodes: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, str(topology), ",".join(nodes)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )


async def wait_ready(proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout)
    assert line.strip() == "READY", f"worker did not start: {line!r}"


def settings_env(settings: Any) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
        "KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
        "DATABASE_URL": settings.database_url,
        "SECRET_KEY_FILE": str(settings.secret_key_file),
        "DEFAULT_RETRY_INTERVAL_SECONDS": str(settings.default_retry_interval_seconds),
    }


def dumps(value: Any) -> str:
    return json.dumps(value)
