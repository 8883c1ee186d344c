"""``when_all_done``: one future for an input's several ledger batches, without awaiting them."""

from __future__ import annotations

import asyncio

from worker.tasks import when_all_done


async def test_done_only_when_every_future_is() -> None:
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    combined = when_all_done([first, second])
    second.set_result(None)
    await asyncio.sleep(0)
    assert not combined.done()
    first.set_result(None)
    await asyncio.sleep(0)
    assert combined.done() and not combined.cancelled()


async def test_a_cancelled_or_failed_one_cancels_it_and_nothing_else() -> None:
    """Cancelled, the consumer leaves the input uncommitted (read again): never counted as done."""
    loop = asyncio.get_running_loop()
    for settle in (lambda f: f.cancel(), lambda f: f.set_exception(RuntimeError("gone"))):
        failing, other = loop.create_future(), loop.create_future()
        combined = when_all_done([failing, other])
        settle(failing)
        await asyncio.sleep(0)
        assert combined.cancelled()
        assert not other.done()  # shared with other inputs: left alone


async def test_cancelling_it_leaves_the_shared_futures_alone() -> None:
    shared = asyncio.get_running_loop().create_future()
    combined = when_all_done([shared])
    combined.cancel()
    shared.set_result(None)
    await asyncio.sleep(0)
    assert shared.result() is None


async def test_nothing_to_wait_for() -> None:
    assert when_all_done([]).done()
