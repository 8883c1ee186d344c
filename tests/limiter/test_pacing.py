"""The pacing arithmetic shared by both limiters, exactly, and LocalLimiter's pacing on a fake clock."""

from __future__ import annotations

import httpx
import pytest

from worker.limiter import LocalLimiter, Pacing, pacing_delay, parse_bucket_filling


@pytest.mark.parametrize(
    ("current", "capacity", "expected"),
    [
        (10, 200, 0.0),
        (139, 200, 0.0),  # the next request lands exactly on the threshold (140)
        (140, 200, 0.1),
        (190, 200, 5.1),  # (190 + 1 - 140) drops at 10/s
        (200, 200, 6.1),
        (1000, 200, 20.0),  # never more than a full bucket's drain time
        (5, 0, 0.0),
    ],
)
def test_pacing_delay(current: float, capacity: float, expected: float) -> None:
    assert pacing_delay(current, capacity) == pytest.approx(expected)


def test_pacing_delay_parameters() -> None:
    assert pacing_delay(190, 200, threshold=0.5, drain_per_second=20) == pytest.approx((191 - 100) / 20)
    assert pacing_delay(190, 200, drain_per_second=0) == 0.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("37/200", (37.0, 200.0)),
        (" 190 / 200 ", (190.0, 200.0)),
        ("190", None),
        ("", None),
        ("a/200", None),
        ("-1/200", None),
        ("1/0", None),
        ("nan/200", None),
    ],
)
def test_parse_bucket_filling(value: str, expected: tuple[float, float] | None) -> None:
    assert parse_bucket_filling({"X-RateLimit-Bucket-Filling": value}) == expected


def test_parse_bucket_filling_header_case() -> None:
    assert parse_bucket_filling({"x-ratelimit-bucket-filling": "5/200"}) == (5.0, 200.0)
    assert parse_bucket_filling(httpx.Headers({"X-RATELIMIT-BUCKET-FILLING": "6/200"})) == (6.0, 200.0)
    assert parse_bucket_filling({}) is None


def test_pacing_delay_from_headers() -> None:
    assert Pacing().delay({"X-RateLimit-Bucket-Filling": "190/200"}) == pytest.approx(5.1)
    assert Pacing().delay({"X-RateLimit-Bucket-Filling": "10/200"}) == 0.0
    assert Pacing().delay({"Content-Type": "application/json"}) == 0.0


class FakeClock:
    """Time that only moves when the limiter sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_local_pacing_waits_exactly_the_drain_time() -> None:
    clock = FakeClock()
    waits: list[tuple[str, float]] = []
    limiter = LocalLimiter(clock=clock, sleep=clock.sleep, on_wait=lambda k, s: waits.append((k, s)))
    async with limiter.slot("a"):
        pass
    limiter.observe("a", {"X-RateLimit-Bucket-Filling": "190/200"})
    async with limiter.slot("b"):  # another token is not paced
        pass
    async with limiter.slot("a"):
        pass
    assert clock.sleeps == [pytest.approx(5.1)]
    assert waits == [("a", 0.0), ("b", 0.0), ("a", pytest.approx(5.1))]

    limiter.observe("a", {"X-RateLimit-Bucket-Filling": "10/200"})
    async with limiter.slot("a"):
        pass
    assert clock.sleeps == [pytest.approx(5.1)]


async def test_local_pacing_keeps_the_latest_not_before() -> None:
    """A low reading after a high one does not cancel the wait the high one asked for."""
    clock = FakeClock()
    limiter = LocalLimiter(clock=clock, sleep=clock.sleep)
    limiter.observe("a", {"X-RateLimit-Bucket-Filling": "190/200"})
    limiter.observe("a", {"X-RateLimit-Bucket-Filling": "150/200"})
    async with limiter.slot("a"):
        pass
    assert sum(clock.sleeps) == pytest.approx(5.1)
