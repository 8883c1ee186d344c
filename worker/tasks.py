"""Small asyncio helpers the background loops share."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import structlog

T = TypeVar("T")


def backoff_delays(first: float, cap: float) -> Iterator[float]:
    """``first``, twice that, four times, ... then ``cap`` for good: the waits between tries of
    something that must succeed in the end (a send, a lookup, a record's handler)."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, cap)


async def all_to_their_end(*awaitables: Awaitable[T]) -> list[T]:
    """Await every one to its end, then raise the first failure (a cancel included); else their
    results. A plain ``gather`` raised at the first failure and left the others running unseen: the
    ones that went through were not recorded, or settled their state after the caller had gone."""
    outcomes = await asyncio.gather(*awaitables, return_exceptions=True)
    failed = next((outcome for outcome in outcomes if isinstance(outcome, BaseException)), None)
    if failed is not None:
        raise failed
    return outcomes  # type: ignore[return-value]  # no exception among them


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel each task and wait until it has finished unwinding (``None`` entries are skipped).

    Waiting matters: a loop that is only told to stop may still be inside a fetch or a commit when
    its consumer is closed under it.
    """
    for task in tasks:
        if task is None:
            continue
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def stop_quietly(stop: Awaitable[None], what: str) -> None:
    """Await a part's ``stop()`` at shutdown whatever it raises (logged): the worker's other parts
    must still stop. aiokafka's ``consumer.stop()`` with its broker gone re-raises the
    ``CancelledError`` of its own cancelled fetch task; one aimed at this task still propagates."""
    try:
        await stop
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        structlog.get_logger("tasks").warning(f"{what} did not stop cleanly", error="CancelledError")
    except Exception as exc:
        structlog.get_logger("tasks").warning(f"{what} did not stop cleanly", error=f"{type(exc).__name__}: {exc}")


def when_all_done(futures: list[asyncio.Future[Any]]) -> asyncio.Future[None]:
    """A future done once every one of ``futures`` is; cancelled if one was cancelled or failed.

    Built on callbacks, not on awaiting them: these are shared futures (a ledger batch's), and a
    task cancelled while it awaits one cancels it for everybody."""
    combined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    left = len(futures)

    def one_done(future: asyncio.Future[Any]) -> None:
        nonlocal left
        left -= 1
        if combined.done():
            return
        if future.cancelled() or future.exception() is not None:
            combined.cancel()
        elif left == 0:
            combined.set_result(None)

    if not futures:
        combined.set_result(None)
    for future in futures:
        future.add_done_callback(one_done)
    return combined


def background_task(coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
    """A task for work shared by many messages (a ledger batch, a record batch, a lease renewer),
    in no message's context: started from whichever message came first, its log lines named that
    message (its correlation id, its shop) for all of them."""
    return asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())


async def wait_renewing(future: asyncio.Future[Any], every: float, renew: Callable[[], Awaitable[Any]]) -> None:
    """Wait until ``future`` is done, without cancelling it, and call ``renew`` every ``every``
    seconds meanwhile: a claim held while a slow broker acknowledges (or fails) a record. A renewal
    that fails is no reason to stop waiting: the record may still go out."""
    while True:
        done, _ = await asyncio.wait({future}, timeout=every)
        if done:
            return
        with contextlib.suppress(Exception):
            await renew()
