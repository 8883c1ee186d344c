"""Custom nodes used by the runtime tests; loaded through a topology's ``imports`` like a user's."""

from __future__ import annotations

import asyncio
from typing import Any

from worker.envelope import Message, ResultCode
from worker.errors import RetryableError, StopError
from worker.node import Batch, Connector, Emit, NodeContext, Result

#: Per-process memory for FlakyOnce: which bodies already failed once.
_failed_once: set[str] = set()


class EmitItems(Batch):
    """Emits ``count`` items ``{"n": i}``; with ``pages`` it walks a cursor, ``per_page`` items a hop;
    with ``then_wait`` it waits that many seconds after its items (a slow last page)."""

    name = "test-emit-items"
    needs_install = False

    async def process(self, message: Message, ctx: NodeContext, emit: Emit) -> Result:
        count = int(message.body["count"])
        per_page = int(message.body.get("per_page") or count)
        page = int((message.cursor or {}).get("page", 0))
        first, last = page * per_page, min(count, (page + 1) * per_page)
        for i in range(first, last):
            await emit({"n": i})
        await asyncio.sleep(float(message.body.get("then_wait") or 0))
        if last < count:
            return Result(code=ResultCode.BATCH_CURSOR_WITH_ITEMS, cursor={"page": page + 1})
        return Result()


class Passthrough(Connector):
    """Adds ``seen: true``; sleeps ``delay`` seconds from options so crash tests can catch it mid-run,
    and adds ``pad`` bytes from options to make an output too large for the broker."""

    name = "test-passthrough"
    needs_install = False

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        delay = float(ctx.options.get("delay", 0))
        if delay:
            await asyncio.sleep(delay)
        body: dict[str, Any] = dict(message.body)
        body["seen"] = True
        pad = int(ctx.options.get("pad", 0))  # an output of about that many bytes more
        if pad:
            body["pad"] = "x" * pad
        return Result(body=body)


def _n(body: Any) -> Any:
    return body.get("n") if isinstance(body, dict) else None


class FlakyOnce(Connector):
    """Fails retryably the first time it sees each body of a process, saying where to resume; the
    retry passes the body on with the resume point it was handed (``resumed_from``)."""

    name = "test-flaky-once"
    needs_install = False

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        key = f"{message.correlation_id}:{message.body!r}"
        if key not in _failed_once:
            _failed_once.add(key)
            resume = {"done": _n(message.body)}
            if pad := int(ctx.options.get("resume_pad", 0)):  # a resume point too large for the broker
                resume["pad"] = "x" * pad
            raise RetryableError("first attempt fails", status=503, resume=resume)
        if not isinstance(message.body, dict):
            return Result(body=message.body)
        return Result(body={**message.body, "resumed_from": message.cursor})


#: Bodies ``n`` OrderedFlakyOnce passed on, in the order it did.
ordered_done: list[Any] = []


class OrderedFlakyOnce(Connector):
    """An ordered writer that fails retryably the first time it sees body ``n == 0`` of a process."""

    name = "test-ordered-flaky-once"
    needs_install = False
    ordered = True

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        key = f"ordered:{message.correlation_id}:{message.body!r}"
        if _n(message.body) == 0 and key not in _failed_once:
            _failed_once.add(key)
            raise RetryableError("first attempt fails", status=503)
        ordered_done.append(_n(message.body))
        return Result(body=message.body)


#: The ``attempt`` cursor OrderedAlwaysFails saw, call by call.
attempts_seen: list[int] = []


class OrderedAlwaysFails(Connector):
    """An ordered writer that fails retryably every time, saying where the next attempt resumes."""

    name = "test-ordered-always-fails"
    needs_install = False
    ordered = True

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        attempt = int((message.cursor or {}).get("attempt", 0))
        attempts_seen.append(attempt)
        raise RetryableError("still failing", status=503, resume={"attempt": attempt + 1})


class Explode(Connector):
    """Stops with 1006 when the body says so, or part-way (a 422 after ``stop_after`` steps, saying
    where to resume); otherwise passes it on."""

    name = "test-explode"
    needs_install = False

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        if "stop_after" in message.body:
            raise StopError("stopped part-way", status=422, resume={"done": message.body["stop_after"]})
        if message.body.get("explode"):
            return Result(code=ResultCode.STOP_AND_FAIL, message="asked to explode")
        return Result(body=message.body)
