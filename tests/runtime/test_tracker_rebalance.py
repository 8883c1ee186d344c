"""The process tracker after a rebalance: it rebuilds its book from the ledger, counting nothing
twice, and announces what its predecessor had not announced yet (and nothing it had)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from tests.simulator.helpers import eventually
from worker.processes import HandledTally, ProcessTracker, handled_record

TP = TopicPartition("shoptet.processes", 0)


class FakeLedger:
    """Stands in for the tracker's AIOKafkaConsumer over one ledger partition."""

    def __init__(self) -> None:
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self.read_to = 0
        self.listener: Any = None

    def put(self, record: dict[str, Any]) -> None:
        offset = len(self.records)
        self.records.append(ConsumerRecord(TP.topic, 0, offset, 0, 0, None, orjson.dumps(record), None, 0, 0, ()))

    async def start(self) -> None:
        return None

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        self.read_to = 0

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.records) for tp in tps}

    async def position(self, tp: TopicPartition) -> int:
        return self.read_to if tp == TP else 0

    async def getmany(self, timeout_ms: int = 0) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        if self.read_to < len(self.records):
            batch, self.read_to = self.records[self.read_to :], len(self.records)
            return {TP: batch}
        await asyncio.sleep(0.01)
        return {}

    async def stop(self) -> None:
        return None


class Outputs:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None, headers: Any) -> asyncio.Future[None]:
        self.sent.append((topic, orjson.loads(value)))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def events(self) -> list[dict[str, Any]]:
        return [value for topic, value in self.sent if topic == "events"]


def start(root: str) -> dict[str, Any]:
    return {"kind": "start", "root": root, "topology": "t", "version": "1", "user": "u", "at": 1.0}


def handled(root: str, **counts: int) -> dict[str, Any]:
    return handled_record([HandledTally(root, "t", "1", "u", handled=1, **counts)])


async def tracker_on(ledger: FakeLedger, outputs: Outputs) -> ProcessTracker:
    tracker = ProcessTracker(ledger, outputs, "ledger", "events", quiet_seconds=0.1)  # type: ignore[arg-type]
    await tracker.start()
    await ledger.listener.on_partitions_assigned([TP])
    return tracker


async def test_a_partition_assigned_again_is_not_counted_twice() -> None:
    ledger, outputs = FakeLedger(), Outputs()
    tracker = await tracker_on(ledger, outputs)
    try:
        ledger.put(start("P"))
        ledger.put(handled("P", node_outputs=2))  # the start handled, two followers in flight
        await eventually(lambda: "P" in tracker.book.processes and tracker.book.processes["P"].handled == 1)
        await ledger.listener.on_partitions_assigned([TP])  # a rebalance gives the partition back
        await asyncio.sleep(0.1)
        for _ in range(2):
            ledger.put(handled("P", done=1))
        await eventually(lambda: outputs.events())
        [event] = outputs.events()
        assert (event["root"], event["starts"], event["handled"], event["in_flight"]) == ("P", 1, 3, 0)
    finally:
        await tracker.stop()


async def test_after_a_rebalance_only_what_was_not_announced_is_announced() -> None:
    ledger, outputs = FakeLedger(), Outputs()
    for root in ("announced", "not-yet"):
        ledger.put(start(root))
        ledger.put(handled(root, done=1))
    ledger.put({"kind": "finished", "root": "announced", "at": 2.0})  # the predecessor's marker
    tracker = await tracker_on(ledger, outputs)
    try:
        await eventually(lambda: outputs.events())
        await asyncio.sleep(0.3)
        assert [e["root"] for e in outputs.events()] == ["not-yet"]
    finally:
        await tracker.stop()


class FailingOutputs(Outputs):
    """Its broker holds the first event until ``release`` is set, then refuses it."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self.failed = False

    async def send(self, topic: str, value: bytes, key: bytes | None, headers: Any) -> asyncio.Future[None]:
        if not self.failed:
            self.failed = True
            self.holding.set()
            await self.release.wait()
            raise ConnectionError("broker away")
        return await super().send(topic, value, key, headers)


async def test_an_announcement_failing_across_a_rebalance_does_not_end_the_tracker() -> None:
    """The failed processes were put back into the book the rebalance had just built, without their
    counts: the next round's lookup raised, and the tracker announced nothing more, ever."""
    ledger, outputs = FakeLedger(), FailingOutputs()
    ledger.put(start("P"))
    ledger.put(handled("P", done=1))
    tracker = await tracker_on(ledger, outputs)
    try:
        await asyncio.wait_for(outputs.holding.wait(), 5)
        await ledger.listener.on_partitions_assigned([])  # the partition went to another member
        outputs.release.set()
        await asyncio.sleep(0.5)  # rounds of the loop after the failure
        assert tracker._task is not None and not tracker._task.done()
        await ledger.listener.on_partitions_assigned([TP])  # and came back: P is announced after all
        await eventually(lambda: outputs.events())
        assert [e["root"] for e in outputs.events()] == ["P"]
    finally:
        await tracker.stop()


async def test_a_process_with_messages_in_trash_is_announced_as_failed() -> None:
    """Its event differed from a clean run's only in a count: consumers had to know to look there."""
    from worker.asyncapi import ProcessFinished

    ledger, outputs = FakeLedger(), Outputs()
    for root, counts in (("clean", {"done": 1}), ("broken", {"trashed": 1})):
        ledger.put(start(root))
        ledger.put(handled(root, **counts))
    tracker = await tracker_on(ledger, outputs)
    try:
        await eventually(lambda: len(outputs.events()) == 2)
        failed = {event["root"]: event["failed"] for event in outputs.events()}
        assert failed == {"clean": False, "broken": True}
        for event in outputs.events():
            ProcessFinished.model_validate(event)  # as documented in the AsyncAPI document
    finally:
        await tracker.stop()


class ScriptedLedger(FakeLedger):
    """Two ledger partitions whose replay comes in the fetches given, each after ``gap`` seconds."""

    def __init__(self, fetches: list[dict[int, list[dict[str, Any]]]], gap: float) -> None:
        super().__init__()
        self.gap = gap
        self.fetches: list[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]] = []
        offsets: dict[int, int] = {}
        for fetch in fetches:
            batch = {}
            for partition, records in fetch.items():
                tp = TopicPartition(TP.topic, partition)
                batch[tp] = [
                    ConsumerRecord(
                        tp.topic, partition, offsets.get(partition, 0) + i, 0, 0, None, orjson.dumps(r), None, 0, 0, ()
                    )
                    for i, r in enumerate(records)
                ]
                offsets[partition] = offsets.get(partition, 0) + len(records)
            self.fetches.append(batch)
        self.ends = {TopicPartition(TP.topic, p): n for p, n in offsets.items()}
        self.positions: dict[TopicPartition, int] = {}

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.ends.get(tp, 0) for tp in tps}

    async def getmany(self, timeout_ms: int = 0) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        if self.fetches:
            await asyncio.sleep(self.gap)
            fetch = self.fetches.pop(0)
            for tp, records in fetch.items():
                self.positions[tp] = records[-1].offset + 1 if records else self.positions.get(tp, 0)
            return fetch
        await asyncio.sleep(0.01)
        return {}

    async def position(self, tp: TopicPartition) -> int:
        return self.positions.get(tp, 0)


async def test_a_replay_is_through_only_when_every_partition_is() -> None:
    """Decided per fetch: a fetch of only the partitions already read to their end announced A,
    whose ``finished`` marker was still ahead on the other partition: A was announced twice."""
    ledger = ScriptedLedger(
        [
            {1: [start("A"), handled("A", done=1)]},
            {0: [start("B")]},
            {0: [handled("B", done=1)]},  # partition 0 read through; 1 is not
            {},  # partition 1's fetch slow (a leader moving): one empty fetch ended the gating
            {},
            {1: [{"kind": "finished", "root": "A", "at": 2.0}]},  # the predecessor had announced A
        ],
        gap=0.3,  # longer than the quiet period: A looks settled when partition 0's fetch comes
    )
    outputs = Outputs()
    tracker = ProcessTracker(ledger, outputs, "ledger", "events", quiet_seconds=0.1)  # type: ignore[arg-type]
    await tracker.start()
    await ledger.listener.on_partitions_assigned(list(ledger.ends))
    try:
        await eventually(lambda: outputs.events())
        await asyncio.sleep(0.5)
        assert [e["root"] for e in outputs.events()] == ["B"]
    finally:
        await tracker.stop()


class FailingOnce(Outputs):
    """Refuses the first announcement (the events topic away for a moment)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = False

    async def send(self, topic: str, value: bytes, key: bytes | None, headers: Any) -> asyncio.Future[None]:
        if not self.refused:
            self.refused = True
            raise ConnectionError("broker away")
        return await super().send(topic, value, key, headers)


async def test_a_failed_announcement_larger_than_the_book_keeps_loses_none() -> None:
    """Trimmed as they were marked, the batch's first processes were no longer in the book when the
    announcement failed, and were never announced."""
    ledger, outputs = FakeLedger(), FailingOnce()
    tracker = await tracker_on(ledger, outputs)
    tracker.book.max_finished = 3
    try:
        for n in range(5):
            ledger.put(start(f"P{n}"))
            ledger.put(handled(f"P{n}", done=1))
        await eventually(lambda: len(outputs.events()) >= 5)
        assert sorted(e["root"] for e in outputs.events()) == [f"P{n}" for n in range(5)]
        assert len(tracker.book.finished_order) == 3  # trimmed once announced
    finally:
        await tracker.stop()
