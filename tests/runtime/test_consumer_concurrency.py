"""Per-key concurrency of ManagedConsumer, without a broker: records are handed to it directly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from worker import consumer as consumer_module
from worker.consumer import ManagedConsumer, ReadAheadBudget, record_cost
from worker.offsets import PartitionOffsets
from worker.tasks import cancel_and_wait

TP = TopicPartition("t", 0)


def record(offset: int, key: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("t", 0, offset, 0, 0, key, b"{}", None, 0, 0, [])


async def feed(consumer: ManagedConsumer, records: list[ConsumerRecord[bytes, bytes]]) -> None:
    for r in records:
        offsets = consumer._offsets.setdefault(TP, PartitionOffsets())
        offsets.started(r.offset)
        consumer._enqueue(offsets, r)


async def test_a_blocked_key_does_not_hold_up_other_keys() -> None:
    release_a = asyncio.Event()
    done: list[int] = []

    async def handler(r: ConsumerRecord[bytes, bytes]) -> None:
        if r.key == b"a":
            await release_a.wait()
        done.append(r.offset)

    consumer = ManagedConsumer("n", None, ["t"], handler, concurrency=2)  # type: ignore[arg-type]
    await feed(consumer, [record(0, b"a"), record(1, b"a"), record(2, b"a"), record(3, b"b"), record(4, b"b")])
    await asyncio.sleep(0.05)
    assert done == [3, 4]  # key a holds its 2 slots (and one waits); key b is not delayed
    assert consumer._offsets[TP].committable() == 0  # nothing committable past the running offset 0
    release_a.set()
    await asyncio.gather(*consumer._tasks)
    assert sorted(done) == [0, 1, 2, 3, 4]
    assert consumer._offsets[TP].committable() == 5
    assert consumer._queues == {}
    assert consumer.in_flight == 0


async def test_ordered_consumer_runs_one_record_per_key_in_offset_order() -> None:
    running: dict[bytes, int] = {}
    peak: dict[bytes, int] = {}
    order: list[Any] = []

    async def handler(r: ConsumerRecord[bytes, bytes]) -> None:
        key = r.key or b""
        running[key] = running.get(key, 0) + 1
        peak[key] = max(peak.get(key, 0), running[key])
        await asyncio.sleep(0.001 * (5 - r.offset % 5))  # later records are faster: order must still hold
        order.append((key, r.offset))
        running[key] -= 1

    consumer = ManagedConsumer("n", None, ["t"], handler, concurrency=10, ordered=True)  # type: ignore[arg-type]
    await feed(consumer, [record(i, b"a" if i % 2 else b"b") for i in range(20)])
    await asyncio.gather(*consumer._tasks)
    assert peak == {b"a": 1, b"b": 1}
    assert [o for k, o in order if k == b"a"] == list(range(1, 20, 2))
    assert [o for k, o in order if k == b"b"] == list(range(0, 20, 2))


async def test_a_consumer_reconfigured_to_ordered_runs_one_record_per_key_from_then_on() -> None:
    """A deploy that asks ``ordered`` (or less concurrency): runners past the new limit stop once
    their current record is done, and no new ones start."""
    running, peak_after = 0, 0
    release = asyncio.Event()
    reconfigured = False

    async def handler(r: ConsumerRecord[bytes, bytes]) -> None:
        nonlocal running, peak_after
        running += 1
        if reconfigured:
            peak_after = max(peak_after, running)
        await release.wait()
        await asyncio.sleep(0.001)
        running -= 1

    consumer = ManagedConsumer("n", None, ["t"], handler, concurrency=4)  # type: ignore[arg-type]
    await feed(consumer, [record(i, b"a") for i in range(12)])
    await asyncio.sleep(0.01)
    assert running == 4
    consumer.configure(concurrency=4, ordered=True)
    reconfigured = True
    release.set()
    await asyncio.gather(*consumer._tasks)
    assert peak_after == 1  # the 8 records left ran one at a time
    assert consumer.in_flight == 0 and consumer._queues == {}
    assert consumer._offsets[TP].committable() == 12


class Committing:
    """Stands in for AIOKafkaConsumer's commits: the positions committed for ``TP``, in order."""

    def __init__(self) -> None:
        self.commits: list[int] = []

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets[TP])


class _OneBatch:
    """Stands in for AIOKafkaConsumer: one fetch returns ``records``, later fetches nothing."""

    def __init__(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        self.batches = [{TP: records}]

    async def getmany(self, timeout_ms: int = 0) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        if self.batches:
            return self.batches.pop()
        await asyncio.sleep(timeout_ms / 1000)
        return {}


async def _run_with_read_ahead(max_in_flight: int) -> list[int]:
    """Five records of a blocked key ahead of one record of another key, read ahead up to a bound."""
    release_a, all_done = asyncio.Event(), asyncio.Event()
    done: list[int] = []
    records = [record(i, b"a") for i in range(5)] + [record(5, b"b")]

    async def handler(r: ConsumerRecord[bytes, bytes]) -> None:
        if r.key == b"a":
            await release_a.wait()
        done.append(r.offset)
        if len(done) == len(records):
            all_done.set()

    fake = _OneBatch(records)
    consumer = ManagedConsumer("n", fake, ["t"], handler, concurrency=2, max_in_flight=max_in_flight)  # type: ignore[arg-type]
    loop_task = asyncio.create_task(consumer._run())
    await asyncio.sleep(0.05)
    seen_while_blocked = list(done)
    release_a.set()
    await asyncio.wait_for(all_done.wait(), 5)
    await asyncio.gather(*consumer._tasks)
    assert consumer.in_flight == 0
    consumer._stopping = True
    loop_task.cancel()
    assert sorted(done) == list(range(6))
    assert consumer._offsets[TP].committable() == 6
    return seen_while_blocked


async def test_records_behind_a_busy_key_are_read_ahead_and_run() -> None:
    # key a's five records (two running, three queued) do not keep key b's record from running
    assert await _run_with_read_ahead(max_in_flight=100) == [5]


async def test_read_ahead_stops_at_max_in_flight() -> None:
    # with room for three records only, key b's record is not read until key a's free some room
    assert await _run_with_read_ahead(max_in_flight=3) == []


def acks_by_hand() -> tuple[dict[int, asyncio.Future[None]], list[int], Any]:
    """A handler whose records' outputs are acknowledged when the test says so."""
    acks: dict[int, asyncio.Future[None]] = {}
    started: list[int] = []

    async def handler(r: ConsumerRecord[bytes, bytes]) -> asyncio.Future[None]:
        started.append(r.offset)
        acks[r.offset] = asyncio.get_running_loop().create_future()
        return acks[r.offset]

    return acks, started, handler


async def test_the_next_record_runs_while_outputs_are_on_their_way_but_the_offset_waits() -> None:
    acks, started, handler = acks_by_hand()
    consumer = ManagedConsumer("n", None, ["t"], handler, concurrency=1)  # type: ignore[arg-type]
    await feed(consumer, [record(i, b"a") for i in range(3)])
    await asyncio.gather(*consumer._tasks)
    assert started == [0, 1, 2]  # one runner, and it did not wait for any acknowledgement
    assert consumer._offsets[TP].committable() == 0 and consumer.in_flight == 3
    acks[1].set_result(None)
    acks[2].set_result(None)
    await asyncio.sleep(0)
    assert consumer._offsets[TP].committable() == 0  # offset 0 is still on its way
    acks[0].set_result(None)
    await asyncio.sleep(0)
    assert consumer._offsets[TP].committable() == 3 and consumer.in_flight == 0


async def test_an_ordered_consumer_waits_for_the_outputs_before_the_next_record() -> None:
    acks, started, handler = acks_by_hand()
    consumer = ManagedConsumer("n", None, ["t"], handler, ordered=True)  # type: ignore[arg-type]
    await feed(consumer, [record(i, b"a") for i in range(2)])
    await asyncio.sleep(0.01)
    assert started == [0]
    acks[0].set_result(None)
    await asyncio.sleep(0.01)
    assert started == [0, 1]
    acks[1].set_result(None)
    await asyncio.gather(*consumer._tasks)
    assert consumer._offsets[TP].committable() == 2


async def test_a_handled_record_whose_outputs_never_arrive_is_never_committed() -> None:
    async def handler(r: ConsumerRecord[bytes, bytes]) -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()  # the broker never answers

    consumer = ManagedConsumer("n", None, ["t"], handler)  # type: ignore[arg-type]
    await feed(consumer, [record(0, b"a")])
    await asyncio.gather(*consumer._tasks)
    await asyncio.wait(set(consumer._recording), timeout=0.05)
    assert consumer._offsets[TP].committable() == 0  # position 0: the record is read again after a restart
    assert consumer.in_flight == 1


async def _run_until(condition: Callable[[], bool]) -> None:
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0.01)


async def test_consumers_of_a_process_share_one_read_ahead_budget() -> None:
    """Consumer a's blocked records spend the shared half of the budget and its reserve: it reads
    no more until they finish, while b still reads within its own reserve."""
    cost = record_cost(record(0, b"a"))
    budget = ReadAheadBudget(max_bytes=8 * cost)  # shared half: 4 records; reserves: 2 records each
    budget.join()
    budget.join()
    release = asyncio.Event()
    done_a: list[int] = []
    done_b: list[int] = []

    async def blocked(r: ConsumerRecord[bytes, bytes]) -> None:
        await release.wait()
        done_a.append(r.offset)

    async def free(r: ConsumerRecord[bytes, bytes]) -> None:
        done_b.append(r.offset)

    a = ManagedConsumer(
        "a", _OneBatch([record(i, b"a") for i in range(10)]), ["t"], blocked, concurrency=10, budget=budget
    )  # type: ignore[arg-type]
    b = ManagedConsumer("b", _OneBatch([record(0, b"b")]), ["t"], free, budget=budget)  # type: ignore[arg-type]
    runs = [asyncio.create_task(a._run())]
    await asyncio.sleep(0.05)
    assert a.in_flight == 4 and budget.spent  # the shared half is a's; past its reserve, it waits
    runs.append(asyncio.create_task(b._run()))
    await _run_until(lambda: bool(done_b))
    assert done_b == [0]  # b was not held up by a's backlog
    assert a.in_flight == 4 and done_a == []

    release.set()
    await _run_until(lambda: len(done_a) == 10)
    assert sorted(done_a) == list(range(10))
    await asyncio.gather(*a._tasks, *b._tasks)
    assert budget.held == 0
    for consumer in (a, b):
        consumer._stopping = True
    for run in runs:
        run.cancel()
    await asyncio.gather(*runs, return_exceptions=True)


async def test_a_consumer_holding_less_than_its_reserve_reads_however_spent_the_budget() -> None:
    """One node type's backlog behind one slow shop took the whole budget, and the process's other
    node types read nothing for as long as it lasted."""
    cost = record_cost(record(0, b"a"))
    budget = ReadAheadBudget(max_bytes=8 * cost)
    for _ in range(4):
        budget.join()
    budget.take(100 * cost)  # the other consumers hold far more than the budget between them
    assert budget.reserve() == cost
    assert not budget.full_for(0)
    assert not budget.full_for(cost - 1)
    assert budget.full_for(cost)
    budget.give(100 * cost)
    assert not budget.full_for(50 * cost)  # while the shared half lasts, anyone reads


async def test_cancelling_an_ordered_runner_leaves_the_shared_settlement_alone() -> None:
    """Records of one ledger batch share one future: stopping one key's runner must not cancel it."""
    shared: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    runners: dict[bytes, asyncio.Task[Any]] = {}

    async def handler(r: ConsumerRecord[bytes, bytes]) -> asyncio.Future[None]:
        task = asyncio.current_task()
        assert task is not None and r.key is not None
        runners[r.key] = task
        return shared

    consumer = ManagedConsumer("n", None, ["t"], handler, ordered=True)  # type: ignore[arg-type]
    await feed(consumer, [record(0, b"a"), record(1, b"b")])
    await asyncio.sleep(0.01)
    runners[b"a"].cancel()
    await asyncio.gather(runners[b"a"], return_exceptions=True)
    assert not shared.cancelled()

    shared.set_result(None)
    await asyncio.gather(*consumer._tasks)
    assert consumer.in_flight == 0
    assert consumer._offsets[TP].committable() == 0  # b's record is done; a's is left for a restart


async def test_a_record_whose_handler_raises_is_tried_again_until_it_goes_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store or broker was down for a moment: the record runs again, and the partition's commit
    moves past it, instead of staying stuck behind it until a restart."""
    monkeypatch.setattr(consumer_module, "HANDLER_RETRY_FIRST_SECONDS", 0.01)
    calls: list[int] = []

    async def handler(r: ConsumerRecord[bytes, bytes]) -> None:
        calls.append(r.offset)
        if r.offset == 1 and calls.count(1) < 3:
            raise RuntimeError("store down")

    consumer = ManagedConsumer("n", None, ["t"], handler, concurrency=1)  # type: ignore[arg-type]
    await feed(consumer, [record(i, b"a") for i in range(4)])
    await asyncio.wait_for(asyncio.gather(*consumer._tasks), 5)
    assert calls == [0, 1, 1, 1, 2, 3]
    assert consumer._offsets[TP].committable() == 4
    assert consumer.in_flight == 0


async def test_records_fetched_before_a_revocation_are_not_taken_up_after_it() -> None:
    """``_run`` waits for room in the middle of a fetched batch; a rebalance comes meanwhile. The
    rest of the batch may be another member's now: it is dropped (and fetched again by the owner)."""
    release = asyncio.Event()
    done: list[int] = []

    async def handler(r: ConsumerRecord[bytes, bytes]) -> None:
        await release.wait()
        done.append(r.offset)

    consumer = ManagedConsumer(  # type: ignore[arg-type]
        "n", _OneBatch([record(i, b"a") for i in range(5)]), ["t"], handler, max_in_flight=1
    )
    loop_task = asyncio.create_task(consumer._run())
    await asyncio.sleep(0.05)  # offset 0 runs; _run waits for room before offset 1
    consumer.generation += 1  # what the rebalance listener does first
    release.set()
    await asyncio.sleep(0.1)
    consumer._stopping = True
    await cancel_and_wait(loop_task)
    assert done == [0]
    assert consumer._offsets[TP].highest_seen == 0
    assert consumer.in_flight == 0


async def test_a_commit_that_lands_after_its_partition_was_revoked_keeps_the_commit_loop_alive() -> None:
    class Revoking:
        """Commits, and meanwhile the rebalance listener drops the partition's offsets."""

        def __init__(self, owner: list[ManagedConsumer]) -> None:
            self.owner = owner

        def assignment(self) -> set[TopicPartition]:
            return {TP}

        async def commit(self, offsets: dict[TopicPartition, int]) -> None:
            self.owner[0]._offsets.pop(TP, None)

    owner: list[ManagedConsumer] = []

    async def handler(r: ConsumerRecord[bytes, bytes]) -> None:
        return None

    consumer = ManagedConsumer("n", Revoking(owner), ["t"], handler)  # type: ignore[arg-type]
    owner.append(consumer)
    await feed(consumer, [record(0, b"a")])
    await asyncio.gather(*consumer._tasks)
    await consumer.commit()  # raised KeyError before, which ended the commit loop for good
    assert TP not in consumer._offsets


async def test_resubscribing_keeps_the_rebalance_listener() -> None:
    class Recording:
        listener: object = None

        def subscribe(self, topics: list[str], listener: object = None) -> None:
            self.topics, self.listener = topics, listener

    fake = Recording()
    consumer = ManagedConsumer("inbound", fake, ["a"], lambda r: None)  # type: ignore[arg-type]
    consumer.resubscribe(["a", "b"])  # still starting: start subscribes to them (see the next test)
    assert consumer.topics == ["a", "b"] and not hasattr(fake, "topics")
    consumer._subscribed = True  # started
    consumer.resubscribe(["a", "c"])
    assert consumer.topics == ["a", "c"] and fake.topics == ["a", "c"]
    assert isinstance(fake.listener, ConsumerRebalanceListener)


async def test_a_consumer_that_abandons_on_revoke_does_not_wait_for_its_running_records() -> None:
    """The retry consumer holds records until they are due (minutes): a revocation that waited for
    them would stall the rebalance, and the next owner would forward them as well."""
    started = asyncio.Event()

    async def wait_until_due(r: ConsumerRecord[bytes, bytes]) -> None:
        started.set()
        await asyncio.sleep(600)

    fake = Committing()
    consumer = ManagedConsumer("retry", fake, ["t"], wait_until_due, abandon_on_revoke=True)  # type: ignore[arg-type]
    await feed(consumer, [record(0, b"a")])
    await started.wait()
    listener = consumer_module._Rebalance(consumer)
    await asyncio.wait_for(listener.on_partitions_revoked([TP]), 2)
    assert all(position == 0 for position in fake.commits)  # not forwarded: read again from offset 0
    assert consumer.in_flight == 0 and consumer._tasks == set()


async def test_a_revocation_waits_for_a_slow_record_only_so_long_and_it_never_touches_the_next_tracker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Shoptet call can run 30 s; the group waits for this member only up to its rebalance
    timeout (6 s). The slow record is left uncommitted, and when it ends after the partition came
    back, the same offset read again must still count as running."""
    monkeypatch.setattr(consumer_module, "REVOKE_WAIT_SECONDS", 0.2)
    release = {b"a": asyncio.Event(), b"b": asyncio.Event()}

    async def slow(r: ConsumerRecord[bytes, bytes]) -> None:
        await release[r.key or b""].wait()

    fake = Committing()
    consumer = ManagedConsumer("n", fake, ["t"], slow)  # type: ignore[arg-type]
    await feed(consumer, [record(0, b"a")])
    await asyncio.sleep(0.01)
    listener = consumer_module._Rebalance(consumer)
    await asyncio.wait_for(listener.on_partitions_revoked([TP]), 1)
    assert all(position == 0 for position in fake.commits)  # offset 0 is still to be read again

    await feed(consumer, [record(0, b"b")])  # the partition came back: offset 0 is read and runs again
    release[b"a"].set()  # the first attempt ends now, after the revocation
    await asyncio.sleep(0.05)
    assert consumer._offsets[TP].committable() == 0  # the second attempt still holds offset 0
    release[b"b"].set()
    await asyncio.wait_for(asyncio.gather(*consumer._tasks), 2)
    assert consumer._offsets[TP].committable() == 1


async def test_lag_counts_to_the_end_of_the_partition_not_to_the_read_ahead() -> None:
    """2,000 records waiting, 100 read ahead: the lag metric said 100, and a backlog of millions
    showed as the read-ahead limit."""

    class AtHighWatermark:
        assigned = {TP}

        def assignment(self) -> set[TopicPartition]:
            return self.assigned

        def highwater(self, tp: TopicPartition) -> int | None:
            assert tp in self.assigned, "Partition is not assigned"  # as aiokafka does
            return 2000 if tp == TP else None

    release = asyncio.Event()

    async def handler(r: ConsumerRecord[bytes, bytes]) -> None:
        await release.wait()

    consumer = ManagedConsumer("n", AtHighWatermark(), ["t"], handler, concurrency=1)  # type: ignore[arg-type]
    await feed(consumer, [record(i, b"a") for i in range(100)])
    assert consumer.lag() == {"t[0]": 2000}
    release.set()
    await asyncio.gather(*consumer._tasks)
    consumer._offsets[TP].committed = 100
    assert consumer.lag() == {"t[0]": 1900}
    AtHighWatermark.assigned = set()  # resubscribed: /metrics failed (500) until the revocation
    assert consumer.lag() == {"t[0]": 0}

    # a partition just assigned, read from its committed offset 1,500: 500 behind, not 2,000
    AtHighWatermark.assigned = {TP}
    fresh = ManagedConsumer("n", AtHighWatermark(), ["t"], handler, concurrency=1)  # type: ignore[arg-type]
    await fresh._take_up({TP: [record(1500, b"a")]})
    assert fresh.lag() == {"t[0]": 500}
    assert fresh._offsets[TP].committable() is None  # nothing new to commit before it is done
    await asyncio.gather(*fresh._tasks)
    assert fresh._offsets[TP].committable() == 1501


async def test_a_cancel_that_comes_as_a_commit_completes_is_not_lost() -> None:
    """A stop cancels the commit loop; on Python 3.11, ``asyncio.wait_for`` returned the commit's
    result instead when the commit completed in the same turn, and the loop went on for good."""
    answered = asyncio.Event()

    class Kafka:
        def assignment(self) -> set[TopicPartition]:
            return {TP}

        async def commit(self, offsets: dict[TopicPartition, int]) -> None:
            await answered.wait()

    async def handler(r: ConsumerRecord[bytes, bytes]) -> None:
        return None

    consumer = ManagedConsumer("n", Kafka(), ["t"], handler)  # type: ignore[arg-type]
    offsets = consumer._offsets[TP] = PartitionOffsets(committed=0)
    offsets.started(0)
    offsets.finished(0)
    committing = asyncio.create_task(consumer.commit())
    await asyncio.sleep(0.01)  # waiting for the broker's answer
    answered.set()  # the answer comes ...
    committing.cancel()  # ... as the stop does
    await asyncio.gather(committing, return_exceptions=True)
    assert committing.cancelled()


async def test_a_consumer_whose_start_failed_holds_no_reserve() -> None:
    """Each failed start of a late node type's consumer joined the budget for good, and shrank every
    live consumer's reserve."""

    class Unreachable:
        async def start(self) -> None:
            raise OSError("broker down")

    budget = ReadAheadBudget(max_bytes=8 * record_cost(record(0, b"a")))
    consumer = ManagedConsumer("n", Unreachable(), ["t"], lambda r: None, budget=budget)  # type: ignore[arg-type]
    for _ in range(3):
        with pytest.raises(OSError):
            await consumer.start()
    assert budget.consumers == 0


async def test_inbound_records_queue_by_their_install_not_their_key() -> None:
    """Keyless records of twenty shops ran one at a time (all under the empty key); records of one
    shop under different keys were not ordered at all."""
    from worker.inbound import install_of

    running: list[bytes] = []
    peak = 0
    order: list[int] = []

    async def handler(r: ConsumerRecord[bytes, bytes]) -> None:
        nonlocal peak
        user = install_of(r)
        assert user not in running  # one record of an install at a time
        running.append(user)
        peak = max(peak, len(running))
        await asyncio.sleep(0.02)
        running.remove(user)
        order.append(r.offset)

    def inbound(offset: int, user: bytes, key: bytes | None) -> ConsumerRecord[bytes, bytes]:
        return ConsumerRecord("t", 0, offset, 0, 0, key, b"{}", None, 0, 0, [("user", user)])

    consumer = ManagedConsumer("inbound", None, ["t"], handler, ordered=True, queue_key=install_of)  # type: ignore[arg-type]
    keyless = [inbound(n, f"shop-{n}".encode(), None) for n in range(5)]
    one_shop = [inbound(5 + n, b"shop-x", f"order-{n}".encode()) for n in range(3)]
    await feed(consumer, [*keyless, *one_shop])
    await asyncio.gather(*consumer._tasks)

    assert peak >= 5  # the keyless shops in parallel
    assert [o for o in order if o >= 5] == [5, 6, 7]  # one shop's records in order, whatever their keys
    assert install_of(ConsumerRecord("t", 0, 0, 0, 0, b"by-key", b"{}", None, 0, 0, [])) == b"by-key"


async def test_lag_is_refreshed_from_the_broker_for_every_assigned_partition() -> None:
    """With the read-ahead full nothing is fetched, so the high watermark stood still while the
    backlog grew (2,550 behind showed as 590); a partition nothing was taken up from yet was left
    out (3,900 behind showed as 928)."""
    other = TopicPartition("t", 1)

    class Broker:
        ends = {TP: 2000, other: 1000}

        def assignment(self) -> set[TopicPartition]:
            return {TP, other}

        def highwater(self, tp: TopicPartition) -> int | None:
            return 1000 if tp == TP else None  # as the last fetch saw it

        async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
            return {tp: self.ends[tp] for tp in tps}

        async def committed(self, tp: TopicPartition) -> int | None:
            return 100 if tp == other else None

    async def handler(r: ConsumerRecord[bytes, bytes]) -> None:
        return None

    consumer = ManagedConsumer("n", Broker(), ["t"], handler, concurrency=1)  # type: ignore[arg-type]
    await consumer._take_up({TP: [record(500, b"a")]})
    await asyncio.gather(*consumer._tasks)
    assert consumer.lag() == {"t[0]": 500}  # 1,000 (the last fetch's end) - 500

    await consumer.refresh_lag()

    assert consumer.lag() == {"t[0]": 1500, "t[1]": 900}
