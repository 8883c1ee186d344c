"""A part's stop that raises at shutdown does not stop the rest, but a cancel of the stopper still does."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from worker.tasks import stop_quietly


async def _stop_like_aiokafka_without_its_broker() -> None:
    """aiokafka's consumer.stop() awaits its own fetch task after cancelling it: the CancelledError
    that task ends with comes out of stop(), though nobody cancelled the caller."""
    fetching = asyncio.create_task(asyncio.sleep(60))
    await asyncio.sleep(0)
    fetching.cancel()
    await fetching


async def test_a_cancelled_error_of_the_parts_own_task_is_logged_not_raised() -> None:
    """The worker's stop was cut short here when the embedded broker had died: up exited with a
    traceback, before the store, HTTP client and limiter were closed."""
    with capture_logs() as logs:
        await stop_quietly(_stop_like_aiokafka_without_its_broker(), "the process tracker")
    assert [e["event"] for e in logs] == ["the process tracker did not stop cleanly"]


async def test_an_error_is_logged_not_raised() -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    with capture_logs() as logs:
        await stop_quietly(broken(), "the catalog follower")
    assert logs[0]["error"] == "RuntimeError: boom"


async def test_a_cancel_of_the_stopping_task_itself_still_propagates() -> None:
    started = asyncio.Event()

    async def slow_stop() -> None:
        started.set()
        await asyncio.sleep(60)

    stopping = asyncio.create_task(stop_quietly(slow_stop(), "a part"))
    await started.wait()
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
