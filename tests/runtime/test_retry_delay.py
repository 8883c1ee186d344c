"""How long a retried message waits: the node's backoff, or Shoptet's Retry-After as a floor."""

from __future__ import annotations

import pytest

from applications.client import retry_after_seconds
from worker.processor import retry_delay


def test_without_retry_after_the_nodes_interval_backs_off_with_jitter() -> None:
    assert 48 <= retry_delay(None, 60, 0) <= 72
    assert 192 <= retry_delay(None, 60, 2) <= 288


@pytest.mark.parametrize("hops", range(10))
def test_a_retry_after_is_a_floor_and_still_backs_off(hops: int) -> None:
    """Shoptet's 429 says "one second from now": taken as given, every 429'd message of a token came
    back in the same second and a persistent 429 spent all ten hops within seconds."""
    delays = [retry_delay(0.0, 60, hops) for _ in range(50)]
    assert min(delays) >= 0.8 * min(2**hops, 600)
    assert len(set(delays)) > 1  # jittered: the token's messages do not come back in step


def test_a_longer_retry_after_is_obeyed() -> None:
    assert 30 <= retry_delay(30.0, 60, 0) <= 36
    assert 5 <= retry_delay(5.0, 60, 1) <= 6  # a 423 lock: back soon, not after the node's minute


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        ("²", None),  # a digit to str.isdigit, not a number
        ("Wed, 21 Oct 2015 07:28:10 GMT", 60.0),
        ("Wed Oct 21 07:28:10 2015", 60.0),  # asctime: no zone, read as GMT whatever TZ says
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_parsing(value: str | None, expected: float | None) -> None:
    now = 1445412430.0  # 2015-10-21 07:27:10 GMT
    assert retry_after_seconds(value, now=now) == expected
