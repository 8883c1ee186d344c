"""Process tracking: how far each process (one start) has got, and when it is finished.

Every start and every handled message is counted in the ``processes`` topic: a start record keyed
by the root process id (batch items keep their root), and handled messages summed per process into
batch records by :mod:`worker.ledger`, in the partition the root id hashes to, so one partition
holds a process's whole story. A message "in flight" is one published to a node topic and not yet handled:

    in_flight = starts + outputs to node topics (followers, cursors, retries) - messages handled

When it reaches zero and stays there for a quiet period, the process is finished (the quiet period
covers a follower's record landing in the ledger just before the record of the message that fed
it, since the two are written by different hops). The tracker then publishes a ``process finished`` event
with the counts to the ``process-events`` topic, and a marker into the ledger so that a tracker
that replays the ledger after a restart does not announce it twice. Counting is at-least-once like
the pipeline: a crash can count a redelivered message twice, never lose one.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError
from aiokafka.structs import ConsumerRecord

from worker.envelope import H, Message, encode_json
from worker.kafka import read_from_start
from worker.record_batches import RecordBatcher
from worker.tasks import cancel_and_wait

log = structlog.get_logger("processes")


#: How long a process below zero in flight must stay unchanged to count as finished: a message
#: handled twice (a redelivery), or a follower's row that overtook the row counting it (written by
#: different hops, perhaps different workers), is told apart from a real end only by a long quiet.
BELOW_ZERO_QUIET_SECONDS = 60.0
#: A ledger replay that reads nothing this long is taken as through (see ``_replayed_through``).
REPLAY_STALL_SECONDS = 10.0


@dataclass(slots=True)
class ProcessCounts:
    root: str
    topology: str = ""
    version: str = ""
    user: str = ""
    started_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None
    starts: int = 0
    handled: int = 0
    node_outputs: int = 0
    emitted: int = 0
    done: int = 0
    retries: int = 0
    trashed: int = 0
    delivered: int = 0

    @property
    def in_flight(self) -> int:
        return self.starts + self.node_outputs - self.handled

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def summary(self) -> dict[str, Any]:
        # from the slots: dataclasses.asdict deep-copies every field, once per finished process
        data = {name: getattr(self, name) for name in self.__slots__}
        data["in_flight"] = self.in_flight
        return data


def start_record(message: Message) -> dict[str, Any]:
    return {"kind": "start", **_ids(message), "at": time.time()}


@dataclass(slots=True)
class HandledTally:
    """Messages of one process handled by this worker, summed into one row of a ledger record."""

    root: str
    topology: str = ""
    version: str = ""
    user: str = ""
    handled: int = 0
    node_outputs: int = 0
    sink_outputs: int = 0
    emitted: int = 0
    retries: int = 0
    trashed: int = 0
    done: int = 0

    @classmethod
    def of(
        cls,
        message: Message,
        *,
        outcome: str,
        node_outputs: int,
        sink_outputs: int,
        emitted: int,
        retried_in_place: int = 0,
        ended: bool | None = None,
    ) -> HandledTally:
        """One handled message: ``outcome`` is ``ok``, ``retry`` or ``trash``; an ordered node's
        retries waited out in place count as retries too. ``ended``: the message's branch ended
        here (by default: it had no node outputs; a batch counts its items' outputs earlier)."""
        return cls._counting(
            message,
            1,
            node_outputs,
            sink_outputs,
            emitted,
            (outcome == "retry") + retried_in_place,
            outcome == "trash",
            outcome == "ok" and (node_outputs == 0 if ended is None else ended),
        )

    @classmethod
    def trashed_unread(cls, headers: dict[str, str]) -> HandledTally | None:
        """A record trashed before any node ran it (malformed, a retry the forwarder could not send),
        by its headers: its hop ends there, in trash. None when it names no process. Counted in
        flight when it was sent and never counted handled, its process stayed running for good."""
        message = Message(body=None, headers=headers)
        if not message.process_id:
            return None
        return cls.of(message, outcome="trash", node_outputs=0, sink_outputs=0, emitted=0)

    @classmethod
    def outputs_of(
        cls, message: Message, *, node_outputs: int, sink_outputs: int = 0, emitted: int = 1, trashed: int = 0
    ) -> HandledTally:
        """Outputs of ``message``'s process counted with nothing handled: those of one item a batch
        emitted, while the batch still runs (its own message is counted when its hop ends), or, with
        no item emitted, one message more (or less) in flight (a replay from trash, which takes its
        entry out of the trashed count: ``trashed=-1``)."""
        return cls._counting(message, 0, node_outputs, sink_outputs, emitted, 0, trashed)

    @classmethod
    def _counting(cls, message: Message, *counts: int) -> HandledTally:
        """A tally of ``message``'s process with ``counts`` in field order from ``handled`` on."""
        headers = message.headers
        # positional and straight from the headers: this runs once per hop
        return cls(
            headers.get(H.ROOT_PROCESS_ID) or headers.get(H.PROCESS_ID, ""),
            headers.get(H.TOPOLOGY_NAME, ""),
            headers.get(H.TOPOLOGY_VERSION, ""),
            headers.get(H.USER) or "",
            *counts,
        )

    def merge(self, other: HandledTally) -> None:
        self.handled += other.handled
        self.node_outputs += other.node_outputs
        self.sink_outputs += other.sink_outputs
        self.emitted += other.emitted
        self.retries += other.retries
        self.trashed += other.trashed
        self.done += other.done

    def row(self) -> list[Any]:
        """The tally as a row of a ``handled`` ledger record, in :data:`HANDLED_COLUMNS` order."""
        return [getattr(self, name) for name in self.__slots__]


#: The columns of a ``handled`` ledger record's rows. Rows rather than one object per process:
#: every hop is counted, and names repeated per process were most of the record and of its parsing.
HANDLED_COLUMNS: list[str] = list(HandledTally.__slots__)


def handled_record(tallies: Iterable[HandledTally]) -> dict[str, Any]:
    """One ledger record counting ``tallies`` (processes of one ledger partition)."""
    return {"kind": "handled", "at": time.time(), "columns": HANDLED_COLUMNS, "rows": [t.row() for t in tallies]}


def root_of(message: Message) -> str:
    return message.headers.get(H.ROOT_PROCESS_ID) or message.process_id


def _ids(message: Message) -> dict[str, str]:
    return {
        "root": root_of(message),
        "topology": message.headers.get(H.TOPOLOGY_NAME, ""),
        "version": message.headers.get(H.TOPOLOGY_VERSION, ""),
        "user": message.user or "",
    }


#: Finished processes a book keeps (for ``status`` and late rows), the most recently finished.
MAX_FINISHED_KEPT = 10_000


@dataclass
class ProcessBook:
    """Pure aggregation of ledger records; used by the tracker and by ``shoptet-worker status``."""

    processes: dict[str, ProcessCounts] = field(default_factory=dict)
    #: Finished processes kept, beyond which the earliest finished are forgotten: the tracker
    #: rebuilds its book from the whole ledger after each restart, and kept every process of the
    #: ledger's retention (a week at 20 processes a second: 12 million, gigabytes) until its first
    #: announcement trimmed 5,000; ``status --watch`` never trimmed at all.
    max_finished: int = MAX_FINISHED_KEPT
    #: Finished processes and when they finished.
    finished_order: dict[str, float] = field(default_factory=dict)
    #: (finished at, root), the earliest first, for trimming; entries of a process since forgotten
    #: or finished again are skipped there. By finish time, not by reading order: ``status`` reads
    #: partitions interleaved, and by reading order the newest finishes of one were trimmed.
    _finish_times: list[tuple[float, str]] = field(default_factory=list)

    #: Local time each process last changed, for the quiet period.
    touched: dict[str, float] = field(default_factory=dict)
    #: Unfinished processes with nothing in flight, the least recently touched first: the only
    #: ones ``settled`` needs to look at, and it can stop at the first that is not quiet yet.
    idle: dict[str, None] = field(default_factory=dict)

    def apply(self, record: dict[str, Any], received_at: float | None = None) -> None:
        kind = record.get("kind")
        if kind == "handled" and "rows" in record:
            self._apply_rows(record, received_at)
            return
        root = str(record.get("root") or "")
        if not root:
            return
        at = float(record.get("at") or 0)
        p = self._touch(
            root,
            str(record.get("topology", "")),
            str(record.get("version", "")),
            str(record.get("user", "")),
            at,
            received_at,
        )
        if kind == "finished":
            self.mark_finished(p, at or time.time())
            return
        if kind == "start":
            p.starts += 1
            p.started_at = min(p.started_at or p.updated_at, p.updated_at)
        elif kind == "handled":  # one process per record, as written before handled rows
            self._count(p, *(int(record.get(name, 0)) for name in HANDLED_COLUMNS[4:]))
            return
        self._check_idle(p)

    def _apply_rows(self, record: dict[str, Any], received_at: float | None) -> None:
        at = float(record.get("at") or 0)
        rows = record["rows"]
        if record.get("columns") != HANDLED_COLUMNS:  # another writer's column order: go by name
            columns = record.get("columns") or []
            rows = [
                [row_values.get(name, 0) for name in HANDLED_COLUMNS]
                for row_values in (dict(zip(columns, row, strict=False)) for row in rows)
            ]
        for root, topology, version, user, handled, node_outputs, sink_outputs, emitted, retries, trashed, done in rows:
            if not root:
                continue
            p = self._touch(root, topology, version, user, at, received_at)
            self._count(p, handled, node_outputs, sink_outputs, emitted, retries, trashed, done)

    def _count(
        self,
        p: ProcessCounts,
        handled: int,
        node_outputs: int,
        sink_outputs: int,
        emitted: int,
        retries: int,
        trashed: int,
        done: int,
    ) -> None:
        """One row's counts (:data:`HANDLED_COLUMNS` from ``handled`` on) added to its process."""
        replayed = node_outputs > 0 and handled == 0 and emitted == 0
        if replayed and p.starts == 0 and p.handled == 0 and p.node_outputs == 0:
            # a replay of a process this book holds nothing of (finished long ago and trimmed, or
            # its start past the ledger's retention): counted as its start, or with no start it
            # was never idle, never announced, and ``status`` showed it settling for ever
            p.starts, node_outputs = p.starts + node_outputs, 0
            trashed = max(trashed, 0)  # its trashed attempt is not in this book to take back
        elif node_outputs < 0 and handled == 0 and emitted == 0 and p.handled == 0 and p.node_outputs == 0:
            # such a replay taken back (it was not sent): its start goes with it, or the process
            # was announced finished for a replay that never went out; with nothing left of it,
            # the book forgets it again (``status`` showed it settling for ever)
            p.starts = max(0, p.starts + node_outputs)
            if p.starts == 0:
                self.forget(p.root)
                return
            node_outputs = 0
        if p.finished_at is not None and replayed:
            # a message replayed from trash (its row hands nothing over, it only adds one in
            # flight): the process runs again, and is announced again, with the replay's outcome.
            # Not a batch's item (emitted): a redelivered batch must not announce it twice.
            self.mark_unfinished(p)
        p.handled += handled
        p.node_outputs += node_outputs
        p.emitted += emitted
        p.delivered += sink_outputs
        p.retries += retries
        p.trashed += trashed
        p.done += done
        self._check_idle(p)

    def _touch(
        self, root: str, topology: str, version: str, user: str, at: float, received_at: float | None
    ) -> ProcessCounts:
        p = self.processes.get(root)
        if p is None:
            p = self.processes[root] = ProcessCounts(root=root, started_at=at)
        p.topology = p.topology or topology
        p.version = p.version or version
        p.user = p.user or user
        p.updated_at = at or p.updated_at
        self.touched[root] = time.monotonic() if received_at is None else received_at
        self.idle.pop(root, None)
        return p

    def forget(self, root: str) -> None:
        """Drop a process from the book (its record, touch time and idle mark)."""
        self.processes.pop(root, None)
        self.touched.pop(root, None)
        self.idle.pop(root, None)
        self.finished_order.pop(root, None)

    def mark_finished(self, p: ProcessCounts, at: float, *, trim: bool = True) -> None:
        """``p`` finished at ``at``; with ``trim``, the earliest finished beyond ``max_finished`` are
        forgotten (a late row of one then counts for a process the book holds nothing of, which is
        never announced)."""
        p.finished_at = at
        self.idle.pop(p.root, None)
        self.finished_order[p.root] = at
        heapq.heappush(self._finish_times, (at, p.root))
        if trim:
            self.trim()

    def trim(self) -> None:
        while len(self.finished_order) > self.max_finished and self._finish_times:
            at, root = heapq.heappop(self._finish_times)
            if self.finished_order.get(root) == at:
                self.forget(root)

    def mark_unfinished(self, p: ProcessCounts) -> None:
        p.finished_at = None
        self.finished_order.pop(p.root, None)

    def _check_idle(self, p: ProcessCounts) -> None:
        # below zero: a message handled twice (a redelivery; the ledger is at-least-once), or a
        # follower's row that overtook the row counting it; only a long quiet tells these apart
        # from a real end (see ``settled``)
        if p.starts and p.in_flight <= 0 and p.finished_at is None:
            self.idle[p.root] = None  # re-inserted: the most recently touched is last

    def apply_value(self, value: bytes | None, received_at: float | None = None) -> None:
        """A ledger record as read from Kafka: one JSON object, or a list (older writers' batches)."""
        try:
            data = orjson.loads(value or b"{}")
            for record in data if isinstance(data, list) else [data]:
                if isinstance(record, dict):
                    self.apply(record, received_at)
        except (ValueError, TypeError, KeyError) as exc:  # not ours, or damaged: skip, keep counting
            log.warning("ledger record skipped", error=str(exc))

    def settled(self, quiet_seconds: float, now: float | None = None) -> list[ProcessCounts]:
        """Unfinished processes with nothing in flight and no change for ``quiet_seconds``; below
        zero in flight, for ``BELOW_ZERO_QUIET_SECONDS`` (a batch's row may still be on its way)."""
        now = time.monotonic() if now is None else now
        ready = []
        for root in self.idle:
            quiet = now - self.touched.get(root, now)
            if quiet < quiet_seconds:
                break  # touched in order: every later one is younger still
            p = self.processes[root]
            if p.in_flight < 0 and quiet < max(quiet_seconds, BELOW_ZERO_QUIET_SECONDS):
                continue
            ready.append(p)
        return [p for p in ready if not p.finished and p.starts and p.in_flight <= 0]


class _Replay(ConsumerRebalanceListener):
    def __init__(self, tracker: ProcessTracker) -> None:
        self.tracker = tracker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # State lives in memory: rebuild it from the start of the ledger, into a new book, since the
        # assignment is this member's whole share (aiokafka's eager protocol): replaying into the old
        # one counted every record read before twice, and kept processes of partitions gone elsewhere.
        consumer = self.tracker.consumer
        self.tracker.book = ProcessBook()
        if assigned:
            await consumer.seek_to_beginning(*assigned)
            self.tracker.replay_to(await consumer.end_offsets(assigned))
        else:
            self.tracker.replay_to({})
        self.tracker.assigned.set()


class ProcessTracker:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        outputs: RecordBatcher,
        ledger_topic: str,
        events_topic: str,
        *,
        quiet_seconds: float = 2.0,
    ) -> None:
        self.consumer = consumer
        #: Events and markers go out batched: a busy worker finishes thousands of processes a second.
        self.outputs = outputs
        self.ledger_topic = ledger_topic
        self.events_topic = events_topic
        self.book = ProcessBook()
        self.quiet_seconds = quiet_seconds
        self.replay_until: dict[TopicPartition, int] = {}
        #: When the replay last read a record (see ``_replayed_through``).
        self._replay_read_at: float | None = None
        self.assigned = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.subscribe([self.ledger_topic], listener=_Replay(self))
        self._task = asyncio.create_task(self._run(), name="process-tracker")

    async def _run(self) -> None:
        while True:
            try:
                batches = await self.consumer.getmany(timeout_ms=500)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("ledger read failed; retrying", error=str(exc))
                await asyncio.sleep(1)
                continue
            for records in batches.values():
                for r in records:
                    self.book.apply_value(r.value)
            if self.replay_until and not await self._replayed_through(bool(batches)):
                # a process's later records may still be ahead; what the predecessor announced has
                # its ``finished`` marker, and what it had not announced yet (it stopped within the
                # quiet period) is announced once the replay is through. Every partition's: decided
                # per fetch, a fetch of the partitions already through announced processes whose
                # markers were still ahead on a partition not read yet (announced twice)
                continue
            finished = self.book.settled(self.quiet_seconds)
            for process in finished:
                # trimmed once announced: trimmed now, a batch larger than the book keeps lost its
                # first processes when the announcement failed (not in the book to put back)
                self.book.mark_finished(process, time.time(), trim=False)
            if finished:
                try:
                    await self._announce(finished)
                except Exception as exc:  # the broker is away: announce them on a later round
                    log.warning("could not announce finished processes", count=len(finished), error=repr(exc))
                    now = time.monotonic()
                    for process in finished:
                        # a rebalance during the wait swapped the book: a process whose partition
                        # went elsewhere is its new owner's (put back here, ``settled`` found no
                        # counts for it, and the error ended the tracker for good)
                        if self.book.processes.get(process.root) is not process:
                            process.finished_at = None
                            continue
                        self.book.mark_unfinished(process)
                        # touched now, so ``idle`` stays ordered by touch time for ``settled``
                        self.book.touched[process.root] = now
                        self.book.idle[process.root] = None
                self.book.trim()

    def replay_to(self, ends: dict[TopicPartition, int]) -> None:
        """Hold announcements until the partitions read from their start reach ``ends``: the whole
        assignment (eager protocol), so partitions gone elsewhere are not waited for."""
        self.replay_until = {tp: end for tp, end in ends.items() if end > 0}
        self._replay_read_at = None

    async def _replayed_through(self, read: bool) -> bool:
        """Whether every partition's replay has reached the end it had when it was assigned.

        By position, per partition: decided per fetch, one fetch of the partitions already through
        announced processes whose markers were still ahead on another. A replay that reads nothing
        for ``REPLAY_STALL_SECONDS`` is taken as through (an end offset the broker overstated)."""
        for tp, end in list(self.replay_until.items()):
            try:
                position = await self.consumer.position(tp)
            except IllegalStateError:  # no longer assigned: not this member's to wait for
                position = end
            if position >= end:
                del self.replay_until[tp]
        now = time.monotonic()
        if read or self._replay_read_at is None:
            self._replay_read_at = now
        elif self.replay_until and now - self._replay_read_at > REPLAY_STALL_SECONDS:
            log.warning("ledger replay read nothing for a while; through", partitions=len(self.replay_until))
            self.replay_until.clear()
        if not self.replay_until:
            self._replay_read_at = None
            return True
        return False

    async def _announce(self, processes: list[ProcessCounts]) -> None:
        """Publish a ``process finished`` event per process, then mark them finished in the ledger."""
        acks = []
        for process in processes:
            # failed: something of it is in trash, waiting for an operator (a clean run has none)
            event = {"event": "process finished", **process.summary(), "failed": process.trashed > 0}
            acks.append(await self.outputs.send(self.events_topic, encode_json(event), process.root.encode(), []))
        await asyncio.gather(*acks)
        acks = []
        for process in processes:
            marker = {"kind": "finished", "root": process.root, "at": process.finished_at}
            acks.append(await self.outputs.send(self.ledger_topic, encode_json(marker), process.root.encode(), []))
            log.info(
                "process finished",
                root=process.root,
                topology=process.topology,
                emitted=process.emitted,
                done=process.done,
                trashed=process.trashed,
            )
        await asyncio.gather(*acks)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        with contextlib.suppress(Exception):
            await self.consumer.stop()


async def read_book(consumer: AIOKafkaConsumer, topic: str) -> ProcessBook:
    """Read the whole ledger once (no group) into a book: what ``status`` shows."""
    book = ProcessBook()

    def apply(record: ConsumerRecord[bytes, bytes]) -> None:
        book.apply_value(record.value)

    await consumer.start()
    try:
        await read_from_start(consumer, topic, apply)
    finally:
        await consumer.stop()
    return book
