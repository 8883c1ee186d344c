from __future__ import annotations

from worker.envelope import H, Message, ResultCode
from worker.node import Result
from worker.offsets import PartitionOffsets
from worker.registry import default_registry
from worker.router import cursor_message, route, start_headers
from worker.topics import TopicNames
from worker.topology import parse_topology

from .test_topology_loader import GOOD


def test_commit_never_passes_an_unfinished_offset() -> None:
    offsets = PartitionOffsets()
    for o in (10, 11, 12):
        offsets.started(o)
    offsets.finished(12)
    offsets.finished(11)
    assert offsets.committable() == 10  # 10 still running: commit nothing past it
    offsets.finished(10)
    assert offsets.committable() == 13
    offsets.committed = 13
    assert offsets.committable() is None


def test_batch_item_gets_new_process_with_parent() -> None:
    tv = parse_topology(GOOD, registry=default_registry())
    first = Message(body={"count": 1}, headers=start_headers(tv, "emit", user="u1", application=None))
    [out] = route(TopicNames("p"), tv, "emit", first, {"n": 1}, new_process=True)
    assert out.topic == "p.node.test-passthrough"
    assert out.message.headers[H.PARENT_ID] == first.process_id
    assert out.message.headers[H.PROCESS_ID] != first.process_id
    assert out.message.headers[H.NODE_ID] == "pass"
    assert out.message.headers[H.PREVIOUS_NODE_ID] == "emit"
    assert out.message.headers[H.USER] == "u1"
    assert out.message.key() == b"u1"


def test_connector_output_keeps_process_and_reaches_sink() -> None:
    tv = parse_topology(GOOD, registry=default_registry())
    msg = Message(body={}, headers=start_headers(tv, "pass", user="u1", application=None))
    [out] = route(TopicNames("p"), tv, "pass", msg.with_headers(cursor='{"page":2}'), {"x": 1})
    assert out.topic == "sample.out"
    assert out.message.process_id == msg.process_id
    assert H.CURSOR not in out.message.headers


def test_cursor_message_republishes_the_input() -> None:
    msg = Message(body={"count": 5}, headers={H.PROCESS_ID: "p1"})
    again = cursor_message(msg, Result(code=ResultCode.BATCH_CURSOR_ONLY, cursor={"page": 2}))
    assert again.body == {"count": 5}
    assert again.cursor == {"page": 2}
    assert again.process_id == "p1"


def test_the_next_paging_step_starts_with_no_retries_spent() -> None:
    retried = Message(
        body={},
        headers={
            H.PROCESS_ID: "p1",
            H.CURSOR: '{"page":40}',
            H.REPEAT_HOPS: "9",
            H.RESULT_MESSAGE: "GET /api/orders -> 503",
            H.RETRY_TARGET_TOPIC: "shoptet.node.shoptet-get-orders-list",
            H.RETRY_DUE_AT: "1700000000.000",
        },
    )
    again = cursor_message(retried, Result(code=ResultCode.BATCH_CURSOR_WITH_ITEMS, cursor={"page": 41}))
    assert again.hops == 0 and again.cursor == {"page": 41}
    assert not {H.REPEAT_HOPS, H.RESULT_MESSAGE, H.RETRY_TARGET_TOPIC, H.RETRY_DUE_AT} & set(again.headers)
