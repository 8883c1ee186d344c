"""A waiter woken by a release just as its caller's timeout cancels it still ends (it hung once)."""

from __future__ import annotations

import asyncio

import pytest

from worker.redis_limiter import _Wakeups


@pytest.mark.parametrize("spins", [1, 2, 5])
async def test_a_cancel_that_comes_with_a_wakeup_is_not_swallowed(spins: int) -> None:
    """asyncio.wait_for on Python 3.11 returned when its event was set in the same turn as the
    cancel, and dropped the cancel: a `slot()` under `asyncio.timeout(...)` whose timeout came with
    this process's own release polled on for good (a full test run hung 300 s on it)."""
    wakeups = _Wakeups()
    waiting = asyncio.create_task(wakeups.wait("token", 5))
    for _ in range(spins):
        await asyncio.sleep(0)  # the waiter is inside its wait
    wakeups.notify("token")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_wakeup_or_the_poll_interval_ends_a_wait() -> None:
    wakeups = _Wakeups()
    waiting = asyncio.create_task(wakeups.wait("token", 5))
    await asyncio.sleep(0)
    wakeups.notify("token")
    await asyncio.wait_for(waiting, 1)
    await asyncio.wait_for(wakeups.wait("token", 0.01), 1)  # nobody releases: the poll interval ends it
