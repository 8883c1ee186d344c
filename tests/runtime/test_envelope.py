"""The message envelope on the wire: what decodes, what is refused and why, and what encodes."""

from __future__ import annotations

import json

import pytest

from worker.envelope import REQUIRED_HEADERS, MalformedMessage, Message, encode_json

HEADERS = [(name, b"x") for name in REQUIRED_HEADERS]


def test_a_body_survives_the_round_trip_through_kafka_bytes() -> None:
    body = {"code": "2024000001", "name": "Žluťoučký kůň", "items": [1, 2.5, None, True]}
    message = Message(body=body, headers={name: "x" for name in REQUIRED_HEADERS})
    encoded = message.encode_body()
    assert "Žluťoučký".encode() in encoded  # UTF-8, not \\u escapes
    assert b" " not in encoded.replace("Žluťoučký kůň".encode(), b"")  # compact
    assert Message.decode(encoded, message.kafka_headers()).body == body


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "body is not JSON"),
        (b"\xff\xfe", "body is not JSON"),
        (None, "empty record value"),
    ],
)
def test_bad_bodies_are_refused_with_the_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        Message.decode(value, HEADERS)


def test_missing_headers_are_named() -> None:
    with pytest.raises(MalformedMessage, match="missing header\\(s\\): process-id"):
        Message.decode(b"{}", [h for h in HEADERS if h[0] != "process-id"])


def test_what_the_fast_encoder_cannot_take_is_still_encoded() -> None:
    huge = 2**70  # past 64 bits: orjson refuses, json does not
    assert json.loads(encode_json({"n": huge, 1: "int key"})) == {"n": huge, "1": "int key"}


def test_headers_decode_from_kafka_bytes_or_a_mapping_and_refuse_bad_utf8() -> None:
    as_text = {name: "x" for name in REQUIRED_HEADERS}
    assert Message.decode(b"{}", HEADERS).headers == as_text
    assert Message.decode(b"{}", {**dict(HEADERS), "extra": "already text"}).headers == {  # type: ignore[dict-item]
        **as_text,
        "extra": "already text",
    }
    with pytest.raises(MalformedMessage, match="header is not UTF-8"):
        Message.decode(b"{}", [*HEADERS, ("user", b"\xff")])


def test_a_header_without_a_value_is_empty_text() -> None:
    """Kafka allows a header with a null value (aiokafka gives None): it is no value, not "None",
    and a required one is missing."""
    message = Message.decode(b"{}", (*HEADERS, ("cursor", None)))  # type: ignore[arg-type]
    assert message.headers["cursor"] == ""
    with pytest.raises(MalformedMessage, match="missing header\\(s\\): node-id"):
        Message.decode(b"{}", tuple((k, None if k == "node-id" else v) for k, v in HEADERS))  # type: ignore[arg-type]


@pytest.mark.parametrize("hops", [b"two", b"-1", b"1.5", "\u00b2".encode(), b"9" * 5000])
def test_a_repeat_count_that_is_not_one_is_refused(hops: bytes) -> None:
    """Read only when the node fails (retry, trash), a bad count raised there, and the consumer ran
    the record again and again."""
    with pytest.raises(MalformedMessage, match="repeat-hops"):
        Message.decode(b"{}", (*HEADERS, ("repeat-hops", hops)))
    assert Message.decode(b"{}", (*HEADERS, ("repeat-hops", b"2"))).hops == 2
