"""Where a node's output goes: followers in the message's own topology version, or a sink.

Pure functions over headers and the topology: no Kafka here, so routing is tested without a broker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from worker.envelope import ATTEMPT_HEADERS, H, Message, ResultCode, new_id
from worker.node import Result
from worker.topics import TopicNames
from worker.topology import TopologyVersion


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    message: Message
    #: To a sink (leaves the process) rather than to a node topic (stays in flight until handled).
    to_sink: bool = False
    #: Measured whole against the broker's size limit, headers included (a retry: its resume cursor
    #: may be most of it); other outputs are measured only when their value is near the limit.
    measure_whole: bool = False


#: Headers that describe one hop and must not leak into the next one.
_PER_HOP = ATTEMPT_HEADERS | {H.CURSOR}


def start_headers(tv: TopologyVersion, node_id: str, *, user: str | None, application: str | None) -> dict[str, str]:
    """Headers of the first message of a new process."""
    process_id = new_id()
    headers = {
        H.CORRELATION_ID: new_id(),
        H.PROCESS_ID: process_id,
        H.ROOT_PROCESS_ID: process_id,
        H.PARENT_ID: "",
        H.SEQUENCE_ID: "0",
        H.TOPOLOGY_ID: f"{tv.name}@{tv.version}",
        H.TOPOLOGY_NAME: tv.name,
        H.TOPOLOGY_VERSION: tv.version,
        H.NODE_ID: node_id,
        H.NODE_NAME: tv.topology.nodes[node_id].node or "",
    }
    if user:
        headers[H.USER] = user
    app = application or tv.topology.application_of(node_id)
    if app:
        headers[H.APPLICATION] = app
    return headers


def _follower_headers(base: dict[str, str], tv: TopologyVersion, from_node: str, to_node: str) -> dict[str, str]:
    # a plain copy unless there is something to drop (only retried or cursor messages have any)
    headers = dict(base) if _PER_HOP.isdisjoint(base) else {k: v for k, v in base.items() if k not in _PER_HOP}
    spec = tv.topology.nodes[to_node]
    headers[H.PREVIOUS_NODE_ID] = from_node
    headers[H.NODE_ID] = to_node
    headers[H.NODE_NAME] = spec.node or spec.sink or ""
    headers[H.SEQUENCE_ID] = str(int(base.get(H.SEQUENCE_ID) or 0) + 1)
    app = tv.topology.application_of(to_node)
    if app and spec.node:
        headers[H.APPLICATION] = app
    return headers


def route(
    topics: TopicNames,
    tv: TopologyVersion,
    node_id: str,
    incoming: Message,
    body: Any,
    *,
    only: tuple[str, ...] = (),
    new_process: bool = False,
    overrides: dict[str, str] | None = None,
) -> list[Outgoing]:
    """One output body to every follower (or only the named ones, for FORWARD_TO).

    ``new_process`` is for batch items: each item is its own process whose parent is the batch.
    """
    followers = [n for n in tv.topology.nodes[node_id].next if not only or n in only]
    base = incoming.headers
    if overrides or new_process:
        base = {**base, **(overrides or {})}  # a copy: the incoming message keeps its headers
        if new_process:
            base[H.PARENT_ID] = incoming.process_id
            base[H.PROCESS_ID] = new_id()
    out = []
    for follower in followers:
        headers = _follower_headers(base, tv, node_id, follower)
        spec = tv.topology.nodes[follower]
        message = Message(body=body, headers=headers)
        out.append(
            Outgoing(spec.sink, message, to_sink=True) if spec.sink else Outgoing(topics.node(spec.node or ""), message)
        )
    return out


def cursor_message(incoming: Message, result: Result) -> Message:
    """The same input again, with the cursor the batch asked for (the node runs another hop).

    The next step starts with no retries spent: the retries of earlier steps added up over a long
    paging run, and a step sent to trash after its first failure stopped the run.
    """
    headers = {k: v for k, v in incoming.headers.items() if k not in ATTEMPT_HEADERS}
    headers[H.CURSOR] = json.dumps(result.cursor, separators=(",", ":"))
    headers[H.RESULT_CODE] = str(int(result.code))
    return Message(body=incoming.body, headers=headers)


def follows(result: Result) -> bool:
    """Whether a connector result continues to followers."""
    return result.code in (ResultCode.SUCCESS, ResultCode.FORWARD_TO)
