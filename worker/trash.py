"""Replaying a trashed message: back to its original topic with its original headers."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from aiokafka.structs import ConsumerRecord

from worker.envelope import ATTEMPT_HEADERS, REQUIRED_HEADERS, H, MalformedMessage, Message, encode_json
from worker.processes import HandledTally, handled_record
from worker.starter import Starter, cannot_load_here, start_inbound
from worker.store import InstallStore, TrashEntry
from worker.topics import TopicNames

log = structlog.get_logger("trash")


#: Undecodable record values are kept as text up to this many characters.
RAW_BODY_LIMIT = 100_000


def record_headers(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: (v or b"").decode(errors="replace") for k, v in (record.headers or ())}  # Kafka allows None


def record_entry(
    record: ConsumerRecord[bytes, bytes],
    *,
    error_class: str,
    error_message: str,
    headers: dict[str, str] | None = None,
    keep_raw: bool = True,
    **fields: Any,
) -> TrashEntry:
    """A trash entry that says where the record came from; ``keep_raw`` keeps its bytes as text
    (for records that did not decode, so an operator can see what arrived). Its ``user`` is the
    header's, else the key (an inbound record's install), unless given."""
    key = record.key.decode(errors="replace") if record.key else None
    headers = record_headers(record) if headers is None else headers
    if fields.get("user") is None:
        fields["user"] = headers.get(H.USER) or key
    return TrashEntry(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key,
        headers=headers,
        raw_body=(record.value or b"").decode(errors="replace")[:RAW_BODY_LIMIT] if keep_raw else None,
        error_class=error_class,
        error_message=error_message,
        **fields,
    )


class NothingToReplay(ValueError):
    pass


class _Stored:
    """``body`` not given: replay the stored one (``None`` is a body of its own: JSON null)."""

    def __repr__(self) -> str:
        return "STORED"


STORED: Any = _Stored()


def replay_message(
    entry: TrashEntry, body: Any = STORED, *, drop_cursor: bool = False, cursor: dict[str, Any] | None = None
) -> Message:
    """The message a replay sends: the stored (or given) body with the original headers, less the
    failed attempt's bookkeeping, and less its ``cursor`` (where its node stopped) with ``drop_cursor``,
    or with ``cursor`` instead (to go on past what stopped it: parse-json-lines' bad line)."""
    if body is STORED:
        body = _stored_body(entry)
    headers = {k: v for k, v in entry.headers.items() if k not in ATTEMPT_HEADERS}  # the failed attempt's
    if drop_cursor:
        headers.pop(H.CURSOR, None)
    if cursor is not None:
        headers[H.CURSOR] = encode_json(cursor).decode()  # as a node's resume point is written
    if entry.key and not headers.get(H.USER):  # as the inbound consumer: the header, else the key
        headers[H.USER] = entry.key
    return Message(body=body, headers=headers)


def _stored_body(entry: TrashEntry) -> Any:
    """The entry's body; else its raw value, when that is JSON (a record the retry forwarder
    trashed kept only its bytes)."""
    if entry.body is not None:
        return entry.body
    if entry.raw_body:
        try:
            return json.loads(entry.raw_body)
        except ValueError:
            pass
    raise NothingToReplay(f"trash entry {entry.id} has no decodable body ({entry.error_message}); pass an edited body")


def on_current_version(sender: Starter, message: Message, topic: str) -> Message:
    """``message`` re-stamped with its topology's current version (``trash replay --current-version``):
    kept on its own version, a replay after a fixed topology (its options, its wiring) failed again."""
    name, node_id = message.headers.get(H.TOPOLOGY_NAME, ""), message.headers.get(H.NODE_ID, "")
    if name in sender.catalog.unloadable():
        # as `run` from the CLI: this shell would have moved it onto the version before the deployed
        # one, or said "not deployed" of a topology that runs
        raise NothingToReplay(cannot_load_here(name))
    tv = sender.catalog.active(name)
    if tv is None:
        raise NothingToReplay(f"topology {name!r} is not deployed and enabled: it has no current version")
    spec = tv.topology.nodes.get(node_id)
    if spec is None or spec.node is None or sender.topics.node(spec.node) != topic:
        raise NothingToReplay(f"{name}@{tv.version} has no node {node_id!r} of the type this message was for")
    return message.with_headers(topology_version=tv.version)


#: How long a replay holds its entry against another replay of it (see :func:`replay`): longer than
#: a publish can take (metadata waits, a full buffer, the acknowledgement: about 30 s each).
REPLAY_LEASE_SECONDS = 600.0


@asynccontextmanager
async def _holding(store: InstallStore, entry_id: int) -> AsyncIterator[None]:
    """Hold one trash entry against a second replay, or a discard, meanwhile (a lease)."""
    lease, owner = f"trash-replay:{entry_id}", f"replay:{uuid.uuid4().hex}"
    if not await store.acquire_lease(lease, owner, REPLAY_LEASE_SECONDS):
        raise NothingToReplay(f"trash entry {entry_id} is being replayed; try again once that is done")
    try:
        yield
    finally:
        try:
            await store.release_lease(lease, owner)
        except Exception as exc:  # what was done stands; the lease expires by itself
            log.warning("trash entry lease not released", entry=entry_id, error=str(exc))


async def discard(store: InstallStore, entry_id: int) -> bool:
    """Delete an entry for good (False: no such entry). Refused while it is being replayed: deleted
    under a replay, the replay still sent it."""
    async with _holding(store, entry_id):
        return await store.remove_trash(entry_id)


async def replay(
    store: InstallStore,
    sender: Starter,
    entry: TrashEntry,
    body: Any = STORED,
    *,
    drop_cursor: bool = False,
    cursor: dict[str, Any] | None = None,
    current_version: bool = False,
) -> Message:
    """Publish again, wait for the broker, and only then remove the entry (nothing lost on a crash).

    ``body`` replaces the stored one; ``drop_cursor`` starts the node over, ``cursor`` replaces
    where it goes on from (see ``replay_message``);
    ``current_version`` runs it on its topology's current version (see ``on_current_version``).

    A stored entry is held by a lease while it is replayed, and read again under it: two operators
    replaying one entry at once sent it twice (both had read it before either removed it).
    """
    if entry.id is None:
        return await _publish(store, sender, entry, body, drop_cursor, cursor, current_version)
    async with _holding(store, entry.id):
        current = await store.get_trash(entry.id)
        if current is None:
            raise NothingToReplay(f"trash entry {entry.id} was replayed or discarded meanwhile")
        return await _publish(store, sender, current, body, drop_cursor, cursor, current_version)


async def _publish(
    store: InstallStore,
    sender: Starter,
    entry: TrashEntry,
    body: Any,
    drop_cursor: bool,
    cursor: dict[str, Any] | None,
    current_version: bool,
) -> Message:
    topics = sender.topics
    if entry.topic != topics.retry and not entry.topic.startswith(topics.node_prefix):
        if drop_cursor or cursor is not None or current_version:
            raise NothingToReplay(
                f"trash entry {entry.id} is an inbound record: it starts its processes again, with no "
                "cursor or version to change (--drop-cursor, --cursor, --current-version do not apply)"
            )
        return await _start_again(store, sender, entry, body)
    topic = _retried_topic(topics, entry) if entry.topic == topics.retry else entry.topic
    if not topic.startswith(topics.node_prefix):
        raise NothingToReplay(f"trash entry {entry.id} of the retry topic names no node topic to go back to")
    message = replay_message(entry, body, drop_cursor=drop_cursor, cursor=cursor)
    # a record trashed as malformed for want of these: sent back, it came straight back to trash
    # (a missing version alone is what ``current_version`` gives it)
    missing = [name for name in REQUIRED_HEADERS if not message.headers.get(name)]
    if current_version:
        missing = [name for name in missing if name != H.TOPOLOGY_VERSION]
    if missing and entry.error_class == MalformedMessage.__name__ and entry.topic != topics.retry:
        hint = " (--current-version gives it the topology's version)" if missing == [H.TOPOLOGY_VERSION] else ""
        raise NothingToReplay(
            f"trash entry {entry.id} has no header(s) {', '.join(missing)}, which its node needs; "
            f"it cannot be replayed{hint}"
        )
    if current_version:
        message = on_current_version(sender, message, topic)
    else:
        _check_version_known(sender, message, entry)
    # counted, and the count acknowledged, before it is sent: its handling must never reach the
    # ledger ahead of it, and a count that failed after the send said "failed" of a message that was
    # out (run again, the command sent it twice). A retry the forwarder trashed is counted handled
    # there too.
    counted = await _count_in_flight(sender, message)
    try:
        if counted is not None:
            await counted  # inside: interrupted here (Ctrl-C), the count queued was never taken back
        future = await sender.send(topic, message)
        await future
    except BaseException:
        if counted is not None:
            await _take_back(sender, message)
        raise
    await _remove_replayed(store, entry)
    return message


class ReplayedNotRemoved(Exception):
    """The replay went out, but its entry could not be removed from trash: replayed again, it would
    go out twice."""


async def _remove_replayed(store: InstallStore, entry: TrashEntry) -> None:
    if entry.id is None:
        return
    try:
        await store.remove_trash(entry.id)
    except Exception as exc:
        raise ReplayedNotRemoved(
            f"trash entry {entry.id} was replayed, but it could not be removed from trash ({exc}); "
            f"do not replay it again: discard it (`shoptet-worker trash discard {entry.id}`) once the store "
            "answers (the replay's hold on the entry, if it could not be let go either, ends within 10 minutes)"
        ) from exc


def _check_version_known(sender: Starter, message: Message, entry: TrashEntry) -> None:
    """Refuse a replay on a topology version the cluster no longer has (its control topic was lost):
    sent, it said "replayed", and the worker retried "not known to this worker" for half an hour
    before it came back to trash."""
    name, version = message.headers.get(H.TOPOLOGY_NAME), message.headers.get(H.TOPOLOGY_VERSION)
    if name and version and sender.catalog.deployed_source(name, version) is None:
        raise NothingToReplay(
            f"trash entry {entry.id} is for {name}@{version}, which is not deployed (any more); "
            "--current-version runs it on the topology's current version"
        )


def _retried_topic(topics: TopicNames, entry: TrashEntry) -> str:
    """The node topic a record of the retry topic was waiting for: its target header, else (the
    forwarder trashes a record without one) the topic of the node type it names."""
    target = entry.headers.get(H.RETRY_TARGET_TOPIC)
    if target:
        return target
    node_name = entry.headers.get(H.NODE_NAME)
    return topics.node(node_name) if node_name else ""


async def _start_again(store: InstallStore, sender: Starter, entry: TrashEntry, body: Any) -> Message:
    """An inbound topic's record starts its processes again, as the inbound consumer does. Sent back
    to the topic, every other reader of it (the ERP) had it twice, and its headers (a sink's record
    carries the process that wrote it) put that finished process back in flight for good."""
    message = replay_message(entry, body)
    user = message.user
    if not user:
        raise NothingToReplay(f"trash entry {entry.id} names no install: give it a `user` header or key")
    listening, started = await start_inbound(
        sender, entry.topic, user=user, body=message.body, application=message.application
    )
    if not started:
        raise NothingToReplay(
            f"no active topology on topic {entry.topic!r} serves application {message.application!r}"
            if listening
            else f"no active topology starts on topic {entry.topic!r} (disabled?)"
        )
    await _remove_replayed(store, entry)
    return message


async def _take_back(sender: Starter, message: Message) -> None:
    """The replay was not sent, so its entry stays in trash: take its count back, or its process
    would wait for it forever."""
    try:
        undo = await _count_in_flight(sender, message, undo=True)
        if undo is not None:
            await undo
    except Exception as exc:
        log.warning("could not take back a failed replay's count", process=message.process_id, error=repr(exc))


async def _count_in_flight(sender: Starter, message: Message, *, undo: bool = False) -> asyncio.Future[Any] | None:
    """A replayed message of a process is in flight again: the ledger counted the trashed attempt
    as handled, so without one more output its process would end at -1 in flight and never be
    announced finished. It is out of trash too: counted there still, a replay that went well left
    its process ``failed``. Messages of no process (inbound topics) start one when handled.
    ``undo`` takes it back (the replay was not sent)."""
    if not message.process_id:
        return None
    step = -1 if undo else 1
    tally = HandledTally.outputs_of(message, node_outputs=step, emitted=0, trashed=-step)
    record = handled_record([tally])
    return await sender.send(sender.topics.processes, Message(body=record).with_key(tally.root))
