"""The ledger writer sums handled messages per process into one record per partition, in the
partition Kafka's default partitioner gives the process's start records, settles a batch only when
its records and its messages' outputs are acknowledged, and never gives up."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiokafka.errors import KafkaTimeoutError, UnknownTopicOrPartitionError
from aiokafka.partitioner import DefaultPartitioner

from worker.envelope import Message, encode_json
from worker.ledger import LedgerWriter
from worker.processes import HANDLED_COLUMNS, HandledTally, ProcessBook, handled_record
from worker.router import Outgoing


class FakeProducer:
    """Records what was sent; the first ``fail`` sends are not acknowledged."""

    def __init__(self, fail: int = 0, unknown_topic: int = 0) -> None:
        self.sent: list[tuple[int, dict[str, Any]]] = []
        self.fail = fail
        self.unknown_topic = unknown_topic

    async def partitions_for(self, topic: str) -> set[int]:
        if self.unknown_topic:
            self.unknown_topic -= 1
            raise UnknownTopicOrPartitionError()
        return {0, 1, 2, 3, 4, 5}

    async def send(self, topic: str, value: bytes, *, partition: int) -> asyncio.Future[None]:
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail:
            self.fail -= 1
            ack.set_exception(KafkaTimeoutError())
        else:
            self.sent.append((partition, json.loads(value)))
            ack.set_result(None)
        return ack


async def no_resend(out: Outgoing) -> asyncio.Future[None]:
    raise AssertionError(f"nothing should be resent, got {out}")


def writer_for(producer: FakeProducer, send_output: Any = no_resend) -> LedgerWriter:
    return LedgerWriter(producer, "ledger", send_output, linger=0.001)  # type: ignore[arg-type]


def tally(root: str, **counts: int) -> HandledTally:
    return HandledTally(root=root, topology="t", version="1", user="shop", **{"handled": 1, **counts})


async def test_handled_messages_are_summed_per_process_in_the_roots_partition() -> None:
    producer = FakeProducer()
    writer = writer_for(producer)
    waiters = [writer.add(tally("root-a", node_outputs=1)) for _ in range(3)]
    waiters.append(writer.add(tally("root-b", done=1)))
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    records = {
        row[0]: (partition, dict(zip(r["columns"], row, strict=True)))
        for partition, r in producer.sent
        for row in r["rows"]
    }
    assert records["root-a"][1]["handled"] == 3 and records["root-a"][1]["node_outputs"] == 3
    assert records["root-b"][1]["done"] == 1
    for root, (partition, _) in records.items():
        assert partition == DefaultPartitioner()(root.encode(), list(range(6)), list(range(6)))
    assert len(producer.sent) == len({p for p, _ in records.values()})  # one record per partition


async def test_a_record_the_broker_did_not_take_is_sent_again_before_anyone_is_told() -> None:
    producer = FakeProducer(fail=1)
    writer = writer_for(producer)
    waiter = writer.add(tally("root-a"))
    await asyncio.sleep(0.1)
    assert not waiter.done() and producer.sent == []  # backing off after the failure
    await asyncio.wait_for(waiter, 2)
    assert [row[0] for _, r in producer.sent for row in r["rows"]] == ["root-a"]


async def test_the_batch_waits_for_its_outputs_and_resends_one_the_broker_refused() -> None:
    loop = asyncio.get_running_loop()
    resent: list[Outgoing] = []

    async def resend(out: Outgoing) -> asyncio.Future[None]:
        resent.append(out)
        ack: asyncio.Future[None] = loop.create_future()
        ack.set_result(None)
        return ack

    writer = writer_for(FakeProducer(), resend)
    taken, refused = Outgoing("node.b", Message(body=1)), Outgoing("node.c", Message(body=2))
    taken_ack: asyncio.Future[None] = loop.create_future()
    refused_ack: asyncio.Future[None] = loop.create_future()
    settled = writer.add(tally("root-a", node_outputs=2), [(taken, taken_ack), (refused, refused_ack)])
    await asyncio.sleep(0.05)
    assert not settled.done()  # the ledger record is in, the outputs are not acknowledged yet
    taken_ack.set_result(None)
    refused_ack.set_exception(KafkaTimeoutError())
    await asyncio.wait_for(settled, 2)
    assert resent == [refused]


def test_the_book_counts_handled_rows() -> None:
    book = ProcessBook()
    book.apply_value(json.dumps({"kind": "start", "root": "r", "at": 1}).encode())
    book.apply_value(encode_json(handled_record([tally("r", node_outputs=2), tally("s", done=1)])))
    book.apply_value(encode_json(handled_record([tally("r", done=1)])))
    process = book.processes["r"]
    assert (process.starts, process.handled, process.node_outputs, process.done) == (1, 2, 2, 1)
    assert process.in_flight == 1
    assert (process.topology, process.version, process.user) == ("t", "1", "shop")
    assert book.processes["s"].done == 1


def test_a_finished_process_runs_again_when_a_replay_puts_a_message_in_flight() -> None:
    """Replayed from trash after its process was announced finished: status kept the old end, and
    the replay's outcome was never announced. Now it is running again, and settles again."""
    book = ProcessBook()
    book.apply_value(json.dumps({"kind": "start", "root": "r", "at": 1}).encode())
    book.apply_value(encode_json(handled_record([tally("r", trashed=1)])))
    assert [p.root for p in book.settled(0.0, now=float("inf"))] == ["r"]
    book.apply_value(json.dumps({"kind": "finished", "root": "r", "at": 2}).encode())
    assert book.processes["r"].finished and book.settled(0.0, now=float("inf")) == []

    book.apply_value(encode_json(handled_record([tally("r", handled=0, node_outputs=1)])))  # the replay
    assert not book.processes["r"].finished and book.processes["r"].in_flight == 1
    book.apply_value(encode_json(handled_record([tally("r", done=1)])))
    [again] = book.settled(0.0, now=float("inf"))
    assert (again.root, again.done, again.trashed) == ("r", 1, 1)

    duplicate = handled_record([tally("r", done=1)])  # a record counted twice (at-least-once)
    book.apply_value(json.dumps({"kind": "finished", "root": "r", "at": 3}).encode())
    book.apply_value(encode_json(duplicate))
    assert book.processes["r"].finished  # below zero in flight is no reason to run again


def test_a_replay_of_a_process_the_book_no_longer_holds_runs_and_is_announced() -> None:
    """Finished long ago and trimmed from the tracker (or its start past the ledger's retention),
    the process came back with no start: never idle, never announced, settling for ever in status."""
    book = ProcessBook()
    book.apply_value(encode_json(handled_record([tally("old", handled=0, node_outputs=1)])))  # the replay
    assert book.processes["old"].in_flight == 1 and book.settled(0.0, now=float("inf")) == []
    book.apply_value(encode_json(handled_record([tally("old", done=1)])))
    [again] = book.settled(0.0, now=float("inf"))
    assert (again.root, again.starts, again.handled, again.done) == ("old", 1, 1, 1)

    # a replay that did not go out is taken back: nothing to announce
    book.apply_value(encode_json(handled_record([tally("gone", handled=0, node_outputs=1)])))
    book.apply_value(encode_json(handled_record([tally("gone", handled=0, node_outputs=-1)])))
    assert "gone" not in book.processes  # nothing of it left: not settling in status for ever
    assert [p.root for p in book.settled(0.0, now=float("inf"))] == ["old"]


def test_a_message_handled_twice_still_lets_its_process_finish() -> None:
    """A redelivery (a rebalance, a crash before the commit) counts one more handled than was sent:
    the process stood at -1 in flight and was never announced finished."""
    book = ProcessBook()
    book.apply_value(json.dumps({"kind": "start", "root": "r", "at": 1}).encode())
    book.apply_value(encode_json(handled_record([tally("r", node_outputs=1)])))
    book.apply_value(encode_json(handled_record([tally("r", done=1)])))
    book.apply_value(encode_json(handled_record([tally("r", done=1)])))  # the same message again
    assert book.processes["r"].in_flight == -1
    assert [p.root for p in book.settled(0.0, now=float("inf"))] == ["r"]


def test_a_batch_whose_items_were_counted_before_its_own_row_is_not_finished_early() -> None:
    """Items go out while their batch runs; its row (node_outputs) comes when its hop ends. Below
    zero meanwhile, the process was announced finished after 2 s, with partial counts."""
    book = ProcessBook()
    book.apply_value(json.dumps({"kind": "start", "root": "r", "at": 1}).encode(), received_at=0.0)
    for _ in range(3):
        book.apply_value(encode_json(handled_record([tally("r", done=1)])), received_at=0.0)
    assert book.processes["r"].in_flight == -2
    assert book.settled(2.0, now=2.5) == []
    book.apply_value(encode_json(handled_record([tally("r", node_outputs=3)])), received_at=3.0)  # the batch
    assert [p.root for p in book.settled(2.0, now=5.5)] == ["r"]


def test_a_batch_row_after_its_items_does_not_announce_the_process_twice() -> None:
    """The batch's own row (handled 1, its outputs) came after its items had ended: read as a
    replay, it reopened the finished process, which was announced a second time."""
    book = ProcessBook()
    book.apply_value(json.dumps({"kind": "start", "root": "r", "at": 1}).encode())
    book.apply_value(encode_json(handled_record([tally("r", done=1)])))
    book.apply_value(json.dumps({"kind": "finished", "root": "r", "at": 2}).encode())
    book.apply_value(encode_json(handled_record([tally("r", node_outputs=1)])))  # the batch's row
    assert book.processes["r"].finished


def test_a_redelivered_batchs_items_do_not_announce_the_process_twice() -> None:
    """A batch's items are counted as it emits them (handled 0, node outputs): read as a replay's
    row, a batch run again after its process had finished (at-least-once) reopened the process,
    which was announced a second time a minute later."""
    book = ProcessBook()
    book.apply_value(json.dumps({"kind": "start", "root": "r", "at": 1}).encode())
    book.apply_value(encode_json(handled_record([tally("r", handled=0, node_outputs=1, emitted=1)])))  # an item
    book.apply_value(encode_json(handled_record([tally("r"), tally("r", done=1)])))  # the batch, the item
    book.apply_value(json.dumps({"kind": "finished", "root": "r", "at": 2}).encode())
    book.apply_value(encode_json(handled_record([tally("r", handled=0, node_outputs=1, emitted=1)])))  # again
    assert book.processes["r"].finished


def test_a_replay_reopens_a_process_that_had_counted_a_duplicate() -> None:
    """Finished at -1 (a redelivery), the replay's +1 brought it to 0 only, and it stayed finished."""
    book = ProcessBook()
    book.apply_value(json.dumps({"kind": "start", "root": "r", "at": 1}).encode())
    book.apply_value(encode_json(handled_record([tally("r", trashed=1), tally("r", done=1)])))
    book.apply_value(json.dumps({"kind": "finished", "root": "r", "at": 2}).encode())
    book.apply_value(encode_json(handled_record([tally("r", handled=0, node_outputs=1)])))  # the replay
    assert not book.processes["r"].finished


def test_rows_in_another_column_order_are_read_by_name() -> None:
    book = ProcessBook()
    columns = ["done", "root", "handled", "node_outputs"]
    book.apply_value(json.dumps({"kind": "handled", "at": 2, "columns": columns, "rows": [[1, "r", 3, 2]]}).encode())
    process = book.processes["r"]
    assert (process.handled, process.node_outputs, process.done, process.retries) == (3, 2, 1, 0)


def test_the_book_still_reads_one_object_per_process_and_skips_what_it_cannot_read() -> None:
    """Ledgers written before handled rows hold one object per process, alone or in a list."""
    book = ProcessBook()
    book.apply_value(json.dumps({"kind": "start", "root": "r", "at": 1}).encode())
    legacy = [{"kind": "handled", "root": "r", "handled": 1, "node_outputs": 2, "at": 2}]
    book.apply_value(json.dumps([*legacy, {"kind": "handled", "root": "r", "handled": 1, "done": 1, "at": 3}]).encode())
    book.apply_value(b"not json")
    book.apply_value(json.dumps({"kind": "handled", "at": 4, "columns": HANDLED_COLUMNS, "rows": [["r", 1]]}).encode())
    process = book.processes["r"]
    assert (process.starts, process.handled, process.node_outputs, process.done) == (1, 2, 2, 1)
    assert process.in_flight == 1


async def test_a_batch_is_settled_even_when_the_ledger_partitions_were_unknown_for_a_while() -> None:
    """After the broker came back empty, ``partitions_for`` raises until the topic is back; the batch
    used to die with it, and its records' offsets stayed in flight until a restart."""
    producer = FakeProducer(unknown_topic=1)
    writer = writer_for(producer)
    waiter = writer.add(tally("root-a"))
    await asyncio.wait_for(waiter, 3)
    assert [row[0] for _, r in producer.sent for row in r["rows"]] == ["root-a"]


async def test_a_batch_is_sent_in_no_messages_log_context() -> None:
    """Started from whichever message opened it, the batch's send carried that message's ids: its
    warnings (a resend) named one shop for a batch of many."""
    from worker.logging import _MESSAGE_FIELDS, bind_message

    seen: list[object] = []

    class Watching(FakeProducer):
        async def send(self, topic: str, value: bytes, *, partition: int) -> asyncio.Future[None]:
            seen.append(_MESSAGE_FIELDS.get())
            return await super().send(topic, value, partition=partition)

    writer = writer_for(Watching())
    bind_message(correlation_id="corr-a", user="shop-a")
    try:
        settled = writer.add(tally("root-a"))
    finally:
        bind_message()
    await asyncio.wait_for(settled, 2)
    assert seen == [None]


def test_a_book_keeps_only_the_most_recently_finished_processes() -> None:
    """The tracker rebuilds its book from the whole ledger at each restart: it held every process of
    the ledger's retention (gigabytes after a week) until an announcement trimmed 5,000."""
    book = ProcessBook(max_finished=3)
    for n in range(6):
        root = f"p{n}"
        book.apply({"kind": "start", "root": root, "at": 1.0})
        book.apply({"kind": "handled", "root": root, "handled": 1, "done": 1})
        book.apply({"kind": "finished", "root": root, "at": 2.0 + n})
    book.apply({"kind": "start", "root": "running", "at": 1.0})
    book.apply({"kind": "handled", "root": "running", "handled": 1, "node_outputs": 1})

    assert sorted(book.processes) == ["p3", "p4", "p5", "running"]
    replayed = {"kind": "handled", "root": "p5", "handled": 0, "node_outputs": 1}
    book.apply(replayed)  # a replay from trash: running again, no longer among the finished
    assert not book.processes["p5"].finished and list(book.finished_order) == ["p3", "p4"]


def test_a_book_trims_by_finish_time_not_by_reading_order() -> None:
    """``status`` reads partitions interleaved: trimmed in reading order, the newest finishes of the
    partition read first were forgotten while older ones of the other stayed."""
    book = ProcessBook(max_finished=3)
    order = [("a1", 10.0), ("b1", 1.0), ("a2", 11.0), ("b2", 2.0), ("b3", 3.0), ("b4", 4.0)]
    for root, at in order:
        book.apply({"kind": "start", "root": root, "at": 0.5})
        book.apply({"kind": "handled", "root": root, "handled": 1, "done": 1})
        book.apply({"kind": "finished", "root": root, "at": at})
    assert sorted(book.processes) == ["a1", "a2", "b4"]


def test_a_replay_that_went_well_leaves_its_process_finished_not_failed() -> None:
    """The replay's count took nothing out of ``trashed``: announced again after a good replay, the
    process was still ``failed`` with an empty trash."""
    from worker.cli.status import state_of
    from worker.envelope import H

    message = Message(body={}, headers={H.PROCESS_ID: "r", H.ROOT_PROCESS_ID: "r", H.TOPOLOGY_NAME: "t"})
    book = ProcessBook()
    book.apply({"kind": "start", "root": "r", "at": 1.0})
    book.apply({"kind": "handled", "root": "r", "handled": 1, "trashed": 1})
    book.apply({"kind": "finished", "root": "r", "at": 2.0})
    assert state_of(book.processes["r"]) == "failed"

    count = HandledTally.outputs_of(message, node_outputs=1, emitted=0, trashed=-1)  # as trash replay
    book.apply_value(encode_json(handled_record([count])))
    assert book.processes["r"].in_flight == 1 and not book.processes["r"].finished
    book.apply_value(
        encode_json(handled_record([HandledTally.of(message, outcome="ok", node_outputs=0, sink_outputs=0, emitted=0)]))
    )
    book.apply({"kind": "finished", "root": "r", "at": 3.0})
    assert (book.processes["r"].trashed, state_of(book.processes["r"])) == (0, "finished")
