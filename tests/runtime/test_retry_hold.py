"""The retry forwarder holds a record for ``HOLD_SECONDS`` at most, so the retry topic's committed
offset keeps moving: a restart forwards again only what was read in the last moments."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import UnknownTopicOrPartitionError
from aiokafka.structs import ConsumerRecord

from worker import retry
from worker.envelope import H
from worker.processes import HandledTally
from worker.retry import RetryForwarder
from worker.store import TrashEntry


class Producer:
    """Stands in for the runtime's producer: what was sent where, acknowledged at once."""

    def __init__(self, missing: frozenset[str] = frozenset()) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        #: Topics the broker cannot name (deleted, refused by an ACL).
        self.missing = missing

    async def partitions_for(self, topic: str) -> set[int]:
        if topic in self.missing:
            raise UnknownTopicOrPartitionError()
        return {0, 1, 2}

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None, headers: Any) -> asyncio.Future[None]:
        self.sent.append((topic, value, key, list(headers)))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def retry_record(
    due_in: float, target: bytes = b"shoptet.node.shoptet-update-stock-movements"
) -> ConsumerRecord[bytes, bytes]:
    headers = [
        (H.RETRY_TARGET_TOPIC, target),
        (H.RETRY_DUE_AT, f"{time.time() + due_in:.3f}".encode()),
        (H.REPEAT_HOPS, b"3"),
        (H.PROCESS_ID, b"p-1"),
    ]
    return ConsumerRecord("shoptet.retry", 0, 7, 0, 0, b"shop-1", b'{"n":1}', None, 2, 7, headers)


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> Producer:
    monkeypatch.setattr(retry, "HOLD_SECONDS", 0.05)
    return Producer()


async def test_a_retry_due_later_than_the_hold_goes_back_to_the_retry_topic_unchanged(producer: Producer) -> None:
    record = retry_record(due_in=600)
    forwarder = RetryForwarder(SimpleNamespace(producer=producer))  # type: ignore[arg-type]

    await asyncio.wait_for(forwarder.handle(record), 1)  # returns after the hold: committable

    assert producer.sent == [("shoptet.retry", record.value, record.key, list(record.headers))]


async def test_a_retry_due_within_the_hold_goes_to_its_node(producer: Producer) -> None:
    forwarder = RetryForwarder(SimpleNamespace(producer=producer))  # type: ignore[arg-type]

    await asyncio.wait_for(forwarder.handle(retry_record(due_in=0.01)), 1)

    [(topic, value, key, headers)] = producer.sent
    assert (topic, value, key) == ("shoptet.node.shoptet-update-stock-movements", b'{"n":1}', b"shop-1")
    assert headers == [(H.REPEAT_HOPS, b"3"), (H.PROCESS_ID, b"p-1")]  # the retry bookkeeping stays behind


class SlowProducer(Producer):
    """Acknowledges each send after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.acks: list[asyncio.Future[None]] = []
        self.queued = asyncio.Event()

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None, headers: Any) -> asyncio.Future[None]:
        self.sent.append((topic, value, key, list(headers)))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(self.delay, ack.set_result, None)
        self.acks.append(ack)
        self.queued.set()
        return ack


async def test_a_forward_under_way_is_seen_through_when_cancelled() -> None:
    """A rebalance or stop cancels the retry consumer's records; one already queued reached the broker
    anyway, and abandoned (uncommitted), it was forwarded again by the next owner: the node ran twice."""
    producer = SlowProducer(delay=0.2)
    forwarder = RetryForwarder(SimpleNamespace(producer=producer))  # type: ignore[arg-type]
    task = asyncio.create_task(forwarder.handle(retry_record(due_in=0)))
    await asyncio.wait_for(producer.queued.wait(), 1)
    task.cancel()

    await asyncio.wait_for(task, 1)  # returns: the consumer counts the record as forwarded

    assert producer.acks[0].done() and len(producer.sent) == 1


async def test_a_retry_still_waiting_for_its_due_time_is_abandoned_when_cancelled(producer: Producer) -> None:
    forwarder = RetryForwarder(SimpleNamespace(producer=producer))  # type: ignore[arg-type]
    task = asyncio.create_task(forwarder.handle(retry_record(due_in=0.02)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert producer.sent == []


class TrashStore:
    def __init__(self) -> None:
        self.entries: list[TrashEntry] = []

    async def add_trash(self, entry: TrashEntry) -> int:
        self.entries.append(entry)
        return len(self.entries)


class Ledger:
    def __init__(self) -> None:
        self.tallies: list[HandledTally] = []

    def add(self, tally: HandledTally) -> asyncio.Future[None]:
        self.tallies.append(tally)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_a_retry_whose_target_topic_stays_missing_goes_to_trash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its send failed again and again (the consumer retries a handler that raises), and the record
    never finished: its partition's committed offset stopped there, and every retry read after it
    was forwarded again at each restart."""
    monkeypatch.setattr(retry, "TARGET_TOPIC_WAIT_SECONDS", 0.05)
    producer, store, ledger = Producer(missing=frozenset({"shoptet.node.retired"})), TrashStore(), Ledger()
    forwarder = RetryForwarder(SimpleNamespace(producer=producer, store=store, ledger=ledger, metrics=None))  # type: ignore[arg-type]

    await asyncio.wait_for(forwarder.handle(retry_record(due_in=0, target=b"shoptet.node.retired")), 5)

    assert producer.sent == []
    [entry] = store.entries
    assert entry.error_class == "UnknownTopicOrPartitionError"
    assert "retry target topic 'shoptet.node.retired' is not available" in entry.error_message
    assert entry.headers[H.RETRY_TARGET_TOPIC] == "shoptet.node.retired"  # a replay finds its way back
    # counted handled, into trash: in flight since its retry was scheduled, its process never ended
    [tally] = ledger.tallies
    assert (tally.root, tally.handled, tally.trashed) == ("p-1", 1, 1)


async def test_a_trashed_retry_cancelled_while_counted_leaves_the_shared_ledger_batch_alone() -> None:
    """The ledger batch's future is every record's in it: cancelled with this forwarder's task (a
    rebalance cancels the retry consumer's records), it cancelled the others', whose offsets then
    never became committable."""
    shared: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    counting = asyncio.Event()

    class PendingLedger(Ledger):
        def add(self, tally: HandledTally) -> asyncio.Future[None]:
            self.tallies.append(tally)
            counting.set()
            return shared

    ledger = PendingLedger()
    runtime = SimpleNamespace(producer=Producer(), store=TrashStore(), ledger=ledger, metrics=None)
    record = ConsumerRecord("shoptet.retry", 0, 7, 0, 0, b"shop-1", b"{}", None, 2, 2, [(H.PROCESS_ID, b"p-1")])
    task = asyncio.create_task(RetryForwarder(runtime).handle(record))  # type: ignore[arg-type]  # no target: trash
    await asyncio.wait_for(counting.wait(), 5)
    await asyncio.sleep(0)  # the forwarder waits on the count now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert not shared.cancelled()
