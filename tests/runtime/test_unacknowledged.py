"""``unacknowledged``: which outputs the broker did not take, without harming shared acknowledgements."""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaTimeoutError

from worker.kafka import unacknowledged


async def test_the_failed_and_cancelled_ones_are_returned() -> None:
    loop = asyncio.get_running_loop()
    taken, refused, dropped = loop.create_future(), loop.create_future(), loop.create_future()
    taken.set_result(None)
    refused.set_exception(KafkaTimeoutError())
    dropped.cancel()
    assert await unacknowledged([("a", taken), ("b", refused), ("c", dropped), ("d", taken)]) == ["b", "c"]


async def test_a_cancelled_waiter_leaves_the_shared_acknowledgement_alone() -> None:
    """A node's flush cancelled at a stop cancelled its record batch's acknowledgement, shared by
    every record of the batch: the ledger batch waiting on it never ended."""
    shared = asyncio.get_running_loop().create_future()
    waiter = asyncio.create_task(unacknowledged([("a", shared)]))
    other = asyncio.create_task(unacknowledged([("b", shared)]))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.sleep(0)
    assert not shared.cancelled()
    shared.set_result(None)
    assert await other == []
