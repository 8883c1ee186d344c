"""Shoptet's date formats: ``2018-05-29T09:02:27+0200`` in bodies, RFC 7231 dates in ``Retry-After``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import format_datetime


def now() -> datetime:
    return datetime.now(UTC)


def shoptet_time(value: datetime) -> str:
    """Shoptet's response format: seconds precision, offset without a colon."""
    return value.strftime("%Y-%m-%dT%H:%M:%S%z")


def parse_query_time(raw: str) -> datetime:
    """Parse a query date the way Shoptet accepts it: ``+02:00``, ``+0200``, ``Z`` or no offset (UTC).

    An unencoded ``+`` in a query string arrives as a space; Shoptet's own examples are written that
    way, so a space before the offset is read as ``+``.
    """
    text = raw.strip()
    if len(text) > 19 and text[19] == " ":
        text = text[:19] + "+" + text[20:]
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def http_date(epoch_seconds: float) -> str:
    """``Mon, 01 Jul 2024 12:01:11 GMT``, the form of Shoptet's ``Retry-After``."""
    return format_datetime(datetime.fromtimestamp(epoch_seconds, UTC), usegmt=True)


class Clock:
    """Wall-clock seconds that tests can move forward, so token expiry needs no sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds
