"""Replaying a trash entry twice at once publishes it once (the store is real: SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from worker.catalog import TopologyCatalog
from worker.envelope import H, Message
from worker.registry import default_registry
from worker.store import TrashEntry
from worker.store.sql import SqlInstallStore
from worker.topics import TopicNames
from worker.topology import parse_topology
from worker.trash import NothingToReplay, ReplayedNotRemoved, replay


async def stored(store: SqlInstallStore, entry: TrashEntry) -> tuple[int, TrashEntry]:
    """``entry`` written to trash, and read back as a replay finds it."""
    entry_id = await store.add_trash(entry)
    found = await store.get_trash(entry_id)
    assert found is not None
    return entry_id, found


class KnowsEveryVersion:
    """A catalog that has every topology version an entry names (see ``ForgotVersions``)."""

    def deployed_source(self, name: str, version: str | None = None) -> tuple[str, str] | None:
        return (version or "v", "name: x")


class SlowSender:
    """Sends nothing anywhere; each send takes a while, as the broker's acknowledgement does."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Message]] = []
        self.topics = TopicNames("t")
        self.catalog: Any = KnowsEveryVersion()

    async def send(self, topic: str, message: Message) -> asyncio.Future[Any]:
        await asyncio.sleep(0.05)
        self.sent.append((topic, message))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class HeldSender(SlowSender):
    """Says when a send began (its replay holds the entry's lease by then) and waits for ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.sending = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, topic: str, message: Message) -> asyncio.Future[Any]:
        self.sending.set()
        await self.release.wait()
        return await super().send(topic, message)


async def test_two_replays_of_one_entry_at_once_publish_it_once(store: SqlInstallStore) -> None:
    entry_id, entry = await stored(
        store, TrashEntry(topic="t.node.x", error_class="StopError", error_message="boom", key="shop-1", body={"n": 1})
    )
    sender = SlowSender()

    outcomes = await asyncio.gather(
        replay(store, sender, entry),  # type: ignore[arg-type]
        replay(store, sender, entry),  # type: ignore[arg-type]
        return_exceptions=True,
    )

    assert [type(o) for o in outcomes].count(Message) == 1, outcomes
    [refused] = [o for o in outcomes if isinstance(o, Exception)]
    assert isinstance(refused, NothingToReplay)
    assert [(topic, m.body) for topic, m in sender.sent] == [("t.node.x", {"n": 1})]
    assert await store.get_trash(entry_id) is None
    with pytest.raises(NothingToReplay, match="replayed or discarded"):
        await replay(store, sender, entry)  # type: ignore[arg-type]


class FailingNodeTopic(SlowSender):
    """The ledger takes records; the node topic's publish fails (a broker gone away mid-replay)."""

    async def send(self, topic: str, message: Message) -> asyncio.Future[Any]:
        if topic != self.topics.processes:
            raise ConnectionError("broker gone")
        return await super().send(topic, message)


class UnacknowledgedNodeTopic(SlowSender):
    """The node topic's publish is queued, and then the broker does not acknowledge it."""

    async def send(self, topic: str, message: Message) -> asyncio.Future[Any]:
        ack = await super().send(topic, message)
        if topic == self.topics.processes:
            return ack
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(KafkaTimeoutError())
        return failed


@pytest.mark.parametrize(
    ("sender_class", "error"), [(FailingNodeTopic, ConnectionError), (UnacknowledgedNodeTopic, KafkaTimeoutError)]
)
async def test_a_replay_that_did_not_reach_the_broker_stays_in_trash_and_takes_its_count_back(
    store: SqlInstallStore, sender_class: type[SlowSender], error: type[Exception]
) -> None:
    """The +1 in flight went to the ledger first; the message did not go (refused, or queued and
    never acknowledged), and stays in trash: removed on queueing alone, a timed-out publish lost it.
    Without the undo, its process waited for it forever (never announced finished)."""
    from worker.envelope import H
    from worker.processes import ProcessBook

    headers = {H.PROCESS_ID: "p1", H.ROOT_PROCESS_ID: "p1", H.TOPOLOGY_NAME: "t", H.TOPOLOGY_VERSION: "v"}
    entry_id, entry = await stored(
        store,
        TrashEntry(topic="t.node.x", error_class="StopError", error_message="boom", headers=headers, body={"n": 1}),
    )
    sender = sender_class()

    with pytest.raises(error):
        await replay(store, sender, entry)  # type: ignore[arg-type]

    book = ProcessBook()
    book.apply({"kind": "start", "root": "p1", "at": 1.0})
    book.apply({"kind": "handled", "root": "p1", "handled": 1, "trashed": 1})  # the trashed attempt
    ledger = [message.body for topic, message in sender.sent if topic == sender.topics.processes]
    for record in ledger:
        book.apply(record)
    assert len(ledger) == 2  # the count, and its undo
    assert book.processes["p1"].in_flight == 0
    assert await store.get_trash(entry_id) is not None


class UnacknowledgedLedger(SlowSender):
    """The ledger's partition does not acknowledge (its leader away); node topics do."""

    async def send(self, topic: str, message: Message) -> asyncio.Future[Any]:
        ack = await super().send(topic, message)
        if topic != self.topics.processes:
            return ack
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(KafkaTimeoutError())
        return failed


async def test_a_replay_whose_count_fails_sends_nothing(store: SqlInstallStore) -> None:
    """The count's acknowledgement was awaited after the message went out: the command failed of a
    message that was sent, its entry stayed, and each run of it again sent one more copy."""
    headers = {H.PROCESS_ID: "p1", H.ROOT_PROCESS_ID: "p1", H.TOPOLOGY_NAME: "t", H.TOPOLOGY_VERSION: "v"}
    entry_id, entry = await stored(
        store,
        TrashEntry(topic="t.node.x", error_class="StopError", error_message="boom", headers=headers, body={"n": 1}),
    )
    sender = UnacknowledgedLedger()

    for _ in range(2):  # an operator tries again
        with pytest.raises(KafkaTimeoutError):
            await replay(store, sender, entry)  # type: ignore[arg-type]

    assert [topic for topic, _ in sender.sent if topic != sender.topics.processes] == []
    assert await store.get_trash(entry_id) is not None


class SlowLedger(SlowSender):
    """The ledger's first acknowledgement does not come (its leader moving); says when it was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.counting = asyncio.Event()

    async def send(self, topic: str, message: Message) -> asyncio.Future[Any]:
        ack = await super().send(topic, message)
        if topic != self.topics.processes or self.counting.is_set():
            return ack
        self.counting.set()
        return asyncio.get_running_loop().create_future()


async def test_a_replay_interrupted_while_its_count_is_acknowledged_takes_the_count_back(
    store: SqlInstallStore,
) -> None:
    """Ctrl-C during that wait left the +1 queued and nothing sent: its process stayed in flight, and
    was never announced finished."""
    headers = {H.PROCESS_ID: "p1", H.ROOT_PROCESS_ID: "p1", H.TOPOLOGY_NAME: "t", H.TOPOLOGY_VERSION: "v"}
    _, entry = await stored(
        store,
        TrashEntry(topic="t.node.x", error_class="StopError", error_message="boom", headers=headers, body={"n": 1}),
    )
    sender = SlowLedger()
    replaying = asyncio.create_task(replay(store, sender, entry))  # type: ignore[arg-type]
    await asyncio.wait_for(sender.counting.wait(), 5)
    await asyncio.sleep(0.01)  # awaiting the count's acknowledgement
    replaying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await replaying

    counts = [m.body["rows"][0] for topic, m in sender.sent if topic == sender.topics.processes]
    columns = sender.sent[0][1].body["columns"]
    in_flight = sum(dict(zip(columns, row, strict=True))["node_outputs"] for row in counts)
    assert in_flight == 0 and len(counts) == 2  # the count and its take-back
    assert [topic for topic, _ in sender.sent if topic != sender.topics.processes] == []


class StoreThatCannotRemove:
    """The real store, except that removing an entry fails (the database restarting)."""

    def __init__(self, store: SqlInstallStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def remove_trash(self, entry_id: int) -> bool:
        raise ConnectionError("database restarting")


async def test_a_replay_sent_but_not_removed_from_trash_says_not_to_replay_it_again(store: SqlInstallStore) -> None:
    entry_id, entry = await stored(
        store, TrashEntry(topic="t.node.x", error_class="StopError", error_message="boom", key="shop-1", body={"n": 1})
    )
    sender = SlowSender()

    with pytest.raises(ReplayedNotRemoved, match=f"do not replay it again: discard it .*trash discard {entry_id}"):
        await replay(StoreThatCannotRemove(store), sender, entry)  # type: ignore[arg-type]

    assert [topic for topic, _ in sender.sent] == ["t.node.x"]


async def test_a_null_body_given_for_a_replay_is_sent_as_null(store: SqlInstallStore) -> None:
    """``trash replay ID --body null``: JSON null is a body; it was taken for "no edit"."""
    _, entry = await stored(
        store, TrashEntry(topic="t.node.x", error_class="StopError", error_message="boom", key="shop-1", body={"n": 1})
    )
    sender = SlowSender()
    await replay(store, sender, entry, None)  # type: ignore[arg-type]
    assert [(topic, m.body) for topic, m in sender.sent] == [("t.node.x", None)]


SETS = """\
name: sets
application: shoptet-premium
start:
  - topic: shoptet.orders
nodes:
  sets: {node: shoptet-product-detail-with-set, next: [out]}
  out: {sink: expanded}
"""


async def test_an_inbound_record_starts_its_processes_again_and_is_not_sent_back(store: SqlInstallStore) -> None:
    """Trashed while its topology was disabled, an order of shoptet.orders (a sink another process
    wrote) went back to the topic: the ERP reading it had it twice, and its headers put the
    finished process that wrote it back in flight, for good."""
    from tests.runtime.test_manual_run import Sender
    from worker.envelope import H

    headers = {H.PROCESS_ID: "writer", H.ROOT_PROCESS_ID: "writer", H.USER: "222651", H.APPLICATION: "shoptet-premium"}
    entry_id, entry = await stored(
        store,
        TrashEntry(
            topic="shoptet.orders",
            error_class="TopologyNotRunnable",
            error_message="no active topology starts on topic 'shoptet.orders' (disabled?)",
            headers=headers,
            key="222651",
            body={"code": "1"},
        ),
    )
    sender = Sender(SETS)

    await replay(store, sender, entry)  # type: ignore[arg-type]

    [(topic, start), (ledger, record)] = sender.sent  # the start message, then its ledger record
    assert (ledger, record.body["kind"]) == ("t.processes", "start")  # a new process, nothing else counted
    assert topic == "t.node.shoptet-product-detail-with-set"
    assert (start.user, start.body, start.headers[H.TOPOLOGY_NAME]) == ("222651", {"code": "1"}, "sets")
    assert start.process_id != "writer"
    assert await store.get_trash(entry_id) is None


async def test_an_inbound_record_no_topology_starts_on_stays_in_trash(store: SqlInstallStore) -> None:
    from tests.runtime.test_manual_run import Sender

    entry_id, entry = await stored(
        store,
        TrashEntry(topic="shoptet.orders", error_class="TopologyNotRunnable", error_message="x", key="1", body={}),
    )
    sender = Sender()
    with pytest.raises(NothingToReplay, match=r"no active topology starts on topic 'shoptet\.orders'"):
        await replay(store, sender, entry)  # type: ignore[arg-type]
    assert sender.sent == [] and await store.get_trash(entry_id) is not None


async def test_a_retry_record_goes_back_to_the_node_topic_it_waited_for_counted(store: SqlInstallStore) -> None:
    """A record the retry forwarder could not read went back to the retry topic without its target
    (an attempt's header), straight back to trash. The forwarder counts what it trashes as handled
    (its process ended, failed), so the replay counts it in flight again, as any other."""
    from worker.envelope import H

    headers = {H.PROCESS_ID: "p1", H.RETRY_TARGET_TOPIC: "t.node.x", H.RETRY_DUE_AT: "soon"}
    _, entry = await stored(
        store,
        TrashEntry(
            topic="t.retry", error_class="MalformedMessage", error_message="bad due time", headers=headers, body={}
        ),
    )
    sender = SlowSender()

    await replay(store, sender, entry)  # type: ignore[arg-type]

    [(ledger, count), (topic, message)] = sender.sent
    assert topic == "t.node.x" and H.RETRY_TARGET_TOPIC not in message.headers
    assert ledger == sender.topics.processes and count.body["rows"][0][0] == "p1"

    # what the forwarder trashes: no target header; its node type says where it was going
    headers = {H.PROCESS_ID: "p2", H.NODE_NAME: "y"}
    _, entry = await stored(
        store, TrashEntry(topic="t.retry", error_class="MalformedMessage", error_message="no target", headers=headers)
    )
    await replay(store, sender, entry, {})  # type: ignore[arg-type]
    assert [topic for topic, _ in sender.sent if topic != sender.topics.processes] == ["t.node.x", "t.node.y"]


async def test_an_entry_being_replayed_is_not_discarded_meanwhile(store: SqlInstallStore) -> None:
    """Deleted under a replay, the replay still sent it: the operator discarded a message that went."""
    from worker.trash import discard

    entry_id, entry = await stored(
        store, TrashEntry(topic="t.node.x", error_class="StopError", error_message="boom", key="shop-1", body={"n": 1})
    )
    sender = HeldSender()
    replaying = asyncio.create_task(replay(store, sender, entry))  # type: ignore[arg-type]
    await asyncio.wait_for(sender.sending.wait(), 10)  # the replay holds its lease while it sends
    with pytest.raises(NothingToReplay, match="being replayed"):
        await discard(store, entry_id)
    sender.release.set()
    await replaying
    assert sender.sent and not await discard(store, entry_id)  # replayed, so gone


async def test_an_entry_kept_only_as_raw_json_replays_as_it_is(store: SqlInstallStore) -> None:
    """A record the retry forwarder trashed keeps only its bytes: a replay refused it for having no
    body, and the operator had to paste the body back."""
    headers = {H.PROCESS_ID: "", H.NODE_NAME: "x", H.USER: "shop-1"}
    _, entry = await stored(
        store,
        TrashEntry(
            topic="t.retry",
            error_class="MalformedMessage",
            error_message="retry record without a target topic",
            headers=headers,
            raw_body='{"id": "2024000123"}',
        ),
    )
    sender = SlowSender()
    await replay(store, sender, entry)  # type: ignore[arg-type]
    assert [(topic, m.body) for topic, m in sender.sent] == [("t.node.x", {"id": "2024000123"})]


async def test_a_record_trashed_for_a_missing_header_is_refused_not_sent_back_to_trash(store: SqlInstallStore) -> None:
    headers = {H.USER: "shop-1", H.CORRELATION_ID: "c", H.PROCESS_ID: "p", H.TOPOLOGY_NAME: "t", H.NODE_ID: "n"}
    _, entry = await stored(
        store,
        TrashEntry(
            topic="t.node.x",
            error_class="MalformedMessage",
            error_message="missing header(s): topology-version",
            headers=headers,
            raw_body='{"id": "1"}',
        ),
    )
    sender = SlowSender()
    with pytest.raises(NothingToReplay, match=r"no header\(s\) topology-version"):
        await replay(store, sender, entry)  # type: ignore[arg-type]
    assert sender.sent == [] and await store.get_trash(entry.id or 0) is not None


async def test_drop_cursor_starts_the_node_over(store: SqlInstallStore) -> None:
    headers = {H.CURSOR: '{"sent": 300}', H.PROCESS_ID: "", H.USER: "shop-1"}
    _, entry = await stored(
        store, TrashEntry(topic="t.node.x", error_class="StopError", error_message="422", headers=headers, body={})
    )
    sender = SlowSender()
    await replay(store, sender, entry, drop_cursor=True)  # type: ignore[arg-type]
    [(_, message)] = sender.sent
    assert H.CURSOR not in message.headers and message.user == "shop-1"


async def test_a_replay_can_go_on_from_another_cursor(store: SqlInstallStore) -> None:
    """parse-json-lines names the skip that leaves a bad line out; with no way to give it, a replay
    failed on that line again (and --drop-cursor sent every line before it again)."""
    headers = {H.CURSOR: '{"skip": 1200}', H.PROCESS_ID: "", H.USER: "shop-1"}
    _, entry = await stored(
        store,
        TrashEntry(topic="t.node.x", error_class="StopError", error_message="line 1201", headers=headers, body={}),
    )
    sender = SlowSender()
    await replay(store, sender, entry, cursor={"skip": 1201})  # type: ignore[arg-type]
    [(_, message)] = sender.sent
    assert message.cursor == {"skip": 1201}


VERSIONED = """\
name: versioned
application: shoptet-premium
start:
  - manual: true
nodes:
  detail: {{node: shoptet-get-order-detail, next: [out], options: {{}}}}
  out: {{sink: versioned.{sink}}}
"""


async def test_current_version_moves_a_replay_onto_the_deployed_fix(store: SqlInstallStore) -> None:
    """Kept on its own version, a replay after a fixed topology ran the broken one again."""
    registry = default_registry()
    sender = SlowSender()
    sender.catalog = TopologyCatalog(registry)  # type: ignore[attr-defined]
    old = parse_topology(VERSIONED.format(sink="old"), registry=registry)
    fixed = parse_topology(VERSIONED.format(sink="fixed"), registry=registry)
    sender.catalog.add_local(fixed, True)  # type: ignore[attr-defined]
    headers = {H.TOPOLOGY_NAME: "versioned", H.TOPOLOGY_VERSION: old.version, H.NODE_ID: "detail", H.USER: "shop-1"}
    topic = sender.topics.node("shoptet-get-order-detail")
    _, entry = await stored(
        store, TrashEntry(topic=topic, error_class="StopError", error_message="x", headers=headers, body={"id": "1"})
    )

    await replay(store, sender, entry, current_version=True)  # type: ignore[arg-type]
    [(sent_to, message)] = sender.sent
    assert sent_to == topic and message.headers[H.TOPOLOGY_VERSION] == fixed.version != old.version

    other = {**headers, H.NODE_ID: "nowhere"}
    _, elsewhere = await stored(
        store, TrashEntry(topic=topic, error_class="StopError", error_message="x", headers=other, body={"id": "1"})
    )
    with pytest.raises(NothingToReplay, match="has no node 'nowhere'"):
        await replay(store, sender, elsewhere, current_version=True)  # type: ignore[arg-type]


async def test_current_version_from_a_shell_that_cannot_load_the_deployed_one_is_refused(
    store: SqlInstallStore,
) -> None:
    """It moved the replay onto the version before the deployed one (the last this shell could load),
    or, with none loadable, said "not deployed and enabled" of a topology that runs."""
    import json

    registry = default_registry()
    sender = SlowSender()
    sender.catalog = TopologyCatalog(registry)  # type: ignore[attr-defined]
    before = parse_topology(VERSIONED.format(sink="before"), registry=registry)
    sender.catalog.add_local(before, True)  # type: ignore[attr-defined]
    source = VERSIONED.format(sink="custom").replace("start:", "imports: [no_such_module.nodes]\nstart:")
    record = {"name": "versioned", "version": "v-custom", "source": source}
    sender.catalog.apply("version:versioned:v-custom", json.dumps(record).encode())  # type: ignore[attr-defined]
    pointer = {"name": "versioned", "version": "v-custom", "enabled": True, "deployed_at": ""}
    sender.catalog.apply("current:versioned", json.dumps(pointer).encode())  # type: ignore[attr-defined]
    headers = {H.TOPOLOGY_NAME: "versioned", H.TOPOLOGY_VERSION: "v0", H.NODE_ID: "detail", H.USER: "shop-1"}
    topic = sender.topics.node("shoptet-get-order-detail")
    _, entry = await stored(
        store, TrashEntry(topic=topic, error_class="StopError", error_message="x", headers=headers, body={"id": "1"})
    )

    with pytest.raises(NothingToReplay, match="deployed, but its version cannot be loaded here"):
        await replay(store, sender, entry, current_version=True)  # type: ignore[arg-type]
    assert sender.sent == []


async def test_a_record_missing_only_its_version_replays_onto_the_current_one(store: SqlInstallStore) -> None:
    """Refused before its version was stamped: the one replay that would work was refused too."""
    registry = default_registry()
    sender = SlowSender()
    sender.catalog = TopologyCatalog(registry)  # type: ignore[attr-defined]
    current = parse_topology(VERSIONED.format(sink="now"), registry=registry)
    sender.catalog.add_local(current, True)  # type: ignore[attr-defined]
    headers = {
        H.TOPOLOGY_NAME: "versioned",
        H.NODE_ID: "detail",
        H.USER: "shop-1",
        H.CORRELATION_ID: "c",
        H.PROCESS_ID: "p",
    }
    topic = sender.topics.node("shoptet-get-order-detail")
    _, entry = await stored(
        store,
        TrashEntry(
            topic=topic,
            error_class="MalformedMessage",
            error_message="missing header(s): topology-version",
            headers=headers,
            raw_body='{"id": "1"}',
        ),
    )
    with pytest.raises(NothingToReplay, match="--current-version gives it"):
        await replay(store, sender, entry)  # type: ignore[arg-type]
    await replay(store, sender, entry, current_version=True)  # type: ignore[arg-type]
    assert [m.headers[H.TOPOLOGY_VERSION] for t, m in sender.sent if t == topic] == [current.version]


async def test_a_replay_on_a_version_the_cluster_no_longer_has_is_refused(store: SqlInstallStore) -> None:
    """Its control topic lost (compose down): the replay said "replayed", and the worker retried
    "not known to this worker" for half an hour before the message came back to trash."""

    class ForgotVersions:
        def deployed_source(self, name: str, version: str | None = None) -> tuple[str, str] | None:
            return None

    headers = {H.PROCESS_ID: "p1", H.TOPOLOGY_NAME: "sync", H.TOPOLOGY_VERSION: "deadbeef", H.USER: "shop-1"}
    _, entry = await stored(
        store, TrashEntry(topic="t.node.x", error_class="StopError", error_message="422", headers=headers, body={})
    )
    sender = SlowSender()
    sender.catalog = ForgotVersions()
    with pytest.raises(NothingToReplay, match=r"sync@deadbeef, which is not deployed \(any more\)"):
        await replay(store, sender, entry)  # type: ignore[arg-type]
    assert sender.sent == [] and await store.get_trash(entry.id or 0) is not None


async def test_an_inbound_records_replay_refuses_options_that_do_not_apply(store: SqlInstallStore) -> None:
    _, entry = await stored(
        store,
        TrashEntry(topic="erp.orders", error_class="MalformedMessage", error_message="x", headers={}, body={}),
    )
    with pytest.raises(NothingToReplay, match="inbound record"):
        await replay(store, SlowSender(), entry, drop_cursor=True)  # type: ignore[arg-type]
