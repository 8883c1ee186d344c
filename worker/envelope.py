"""The message envelope: a JSON body plus Kafka headers with Orchesty's names.

Keeping Orchesty's header names means a process built for the Orchesty Shoptet connector reads
the same headers here. The Kafka key is always the install's ``user`` so that one e-shop's
messages stay in one partition of every node topic.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import orjson


class ResultCode(IntEnum):
    """Orchesty's result codes; the values are part of the contract and never change."""

    SUCCESS = 0
    REPEAT = 1001
    FORWARD_TO = 1002
    DO_NOT_CONTINUE = 1003
    LIMIT_EXCEEDED = 1004
    STOP_AND_FAIL = 1006
    BATCH_CURSOR_WITH_ITEMS = 1010
    BATCH_CURSOR_ONLY = 1011


class H:
    """Header names (Orchesty's, plus our topology version and trash/retry bookkeeping)."""

    CORRELATION_ID = "correlation-id"
    PROCESS_ID = "process-id"
    PARENT_ID = "parent-id"
    SEQUENCE_ID = "sequence-id"
    TOPOLOGY_ID = "topology-id"
    TOPOLOGY_NAME = "topology-name"
    TOPOLOGY_VERSION = "topology-version"
    NODE_ID = "node-id"
    NODE_NAME = "node-name"
    PREVIOUS_NODE_ID = "previous-node-id"
    USER = "user"
    APPLICATION = "application"
    CURSOR = "cursor"
    REPEAT_INTERVAL = "repeat-interval"
    REPEAT_MAX_HOPS = "repeat-max-hops"
    REPEAT_HOPS = "repeat-hops"
    RESULT_CODE = "result-code"
    RESULT_MESSAGE = "result-message"
    # ours
    ROOT_PROCESS_ID = "root-process-id"
    RETRY_TARGET_TOPIC = "retry-target-topic"
    RETRY_DUE_AT = "retry-due-at"


#: Headers every message on a node topic must carry; anything less is malformed and goes to trash.
REQUIRED_HEADERS = (H.CORRELATION_ID, H.PROCESS_ID, H.TOPOLOGY_NAME, H.TOPOLOGY_VERSION, H.NODE_ID)

#: Bookkeeping of one attempt (its retries, its result, its wait on the retry topic): a follower, the
#: next paging step and a replay from trash each start without it.
ATTEMPT_HEADERS = frozenset((H.REPEAT_HOPS, H.RESULT_CODE, H.RESULT_MESSAGE, H.RETRY_TARGET_TOPIC, H.RETRY_DUE_AT))


#: Header value types decoded as UTF-8 (a tuple: ``bytes | bytearray`` would build a union per header).
_BYTES = (bytes, bytearray)


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON; what orjson cannot encode (integers past 64 bits) falls back to json."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def new_id() -> str:
    return uuid.uuid4().hex


class MalformedMessage(ValueError):
    """A record that cannot be decoded into a :class:`Message` (bad JSON, missing headers)."""


@dataclass(slots=True)
class Message:
    """One message between nodes: a JSON-compatible body and string headers.

    The Kafka key is the ``user`` header unless ``partition_key`` says otherwise (the process
    ledger is keyed by process, not by install).
    """

    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    partition_key: str | None = None

    def with_key(self, key: str) -> Message:
        return Message(body=self.body, headers=self.headers, partition_key=key)

    @property
    def user(self) -> str | None:
        return self.headers.get(H.USER) or None

    @property
    def application(self) -> str | None:
        return self.headers.get(H.APPLICATION) or None

    @property
    def process_id(self) -> str:
        return self.headers.get(H.PROCESS_ID, "")

    @property
    def correlation_id(self) -> str:
        return self.headers.get(H.CORRELATION_ID, "")

    @property
    def cursor(self) -> dict[str, Any] | None:
        raw = self.headers.get(H.CURSOR)
        if not raw:
            return None
        value = json.loads(raw)
        return value if isinstance(value, dict) else None

    @property
    def hops(self) -> int:
        return int(self.headers.get(H.REPEAT_HOPS) or 0)

    def with_headers(self, **changes: str | None) -> Message:
        """A copy with header changes; ``None`` removes a header. Keyword ``a_b`` means ``a-b``."""
        headers = dict(self.headers)
        for key, value in changes.items():
            name = key.replace("_", "-")
            if value is None:
                headers.pop(name, None)
            else:
                headers[name] = value
        return Message(body=self.body, headers=headers)

    # -- Kafka wire format -------------------------------------------------------------------

    def key(self) -> bytes | None:
        key = self.partition_key or self.user
        return key.encode() if key else None

    def encode_body(self) -> bytes:
        return encode_json(self.body)

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        return [(k, v.encode()) for k, v in self.headers.items()]

    @classmethod
    def decode(
        cls,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes],
        *,
        required: Iterable[str] = REQUIRED_HEADERS,
    ) -> Message:
        """Decode a Kafka record; raise :class:`MalformedMessage` saying exactly what is wrong."""
        # Kafka hands over a tuple of pairs: checked first, because isinstance on Mapping (an ABC)
        # costs more than the rest of the header decoding
        pairs = (
            headers if type(headers) is tuple else list(headers.items() if isinstance(headers, Mapping) else headers)
        )
        try:
            try:
                decoded = {k: v.decode() for k, v in pairs}  # what Kafka hands over: bytes
            except AttributeError:  # Kafka allows a header without a value: aiokafka gives None
                decoded = {k: _header_text(v) for k, v in pairs}
        except UnicodeDecodeError as exc:
            raise MalformedMessage(f"header is not UTF-8: {exc}") from exc
        missing = [name for name in required if not decoded.get(name)]
        if missing:
            raise MalformedMessage(f"missing header(s): {', '.join(missing)}")
        hops = decoded.get(H.REPEAT_HOPS)
        if hops and not (hops.isascii() and hops.isdigit() and len(hops) <= 9):
            # read when the node fails (retry, trash): raised there, the record was run again and again
            raise MalformedMessage(f"header {H.REPEAT_HOPS} is not a count: {hops[:50]!r}")
        if value is None:
            raise MalformedMessage("empty record value (tombstone)")
        try:
            body = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise MalformedMessage(f"body is not JSON: {exc}") from exc
        return cls(body=body, headers=decoded)


def _header_text(value: Any) -> str:
    """A header value as text: bytes decoded (strictly), none as empty, anything else as ``str``."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, _BYTES) else str(value)
