"""shoptet-parse-json-lines: stream a finished snapshot job's gzipped JSON Lines file.

Listed with the connectors (Orchesty's catalogue), but it emits many messages, so it is a Batch.
Fix: the file is streamed and decompressed incrementally, so memory stays flat whatever its size
(Orchesty downloaded and gunzipped the whole file in memory). Once the whole file of a full export
is read and the broker has every item, the change feed's watermark moves on
(:func:`nodes.snapshot.complete_export`).
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nodes.shoptet import parse_body, parse_cursor
from nodes.snapshot import complete_export
from worker.envelope import Message, ResultCode
from worker.errors import NodeError, RetryableError, StopError
from worker.node import Batch, Emit, NodeContext, NoOptions, Result

LINES_PER_MESSAGE = 50
#: A hop emits lines for this long at most, then goes on in the next: within the graceful stop's
#: 30 s, so that a stop or a rebalance waits for it to end instead of cutting the file off.
MAX_HOP_SECONDS = 20.0
#: A hop whose skipping took most of ``MAX_HOP_SECONDS`` still emits for this long.
MIN_HOP_EMIT_SECONDS = 5.0
#: A message's lines stay under this much JSON: fifty lines of products with long descriptions
#: passed the broker's 1 MiB a record, and the whole export stopped at that message.
MAX_MESSAGE_BYTES = 768 * 1024
#: Upper bound of decompressed bytes produced per step: a tiny, highly compressed chunk cannot
#: blow up memory.
MAX_INFLATE_STEP = 1 << 20
GZIP_WBITS = 31


class Job(BaseModel):
    """``data.job`` from shoptet-job-finished-webhook."""

    model_config = ConfigDict(extra="ignore")
    jobId: str
    status: str
    resultUrl: str | None = None
    log: Any = None


async def gunzip(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Incrementally inflate a gzip stream (several concatenated members allowed).

    A stream that stops inside a member is refused: cut at a line break, it parsed as a shorter
    file, and a full export's watermark then moved past the lines that never came.
    """
    inflater = zlib.decompressobj(wbits=GZIP_WBITS)
    in_member = False  # the current inflater has been given data of a member it has not ended
    received = False
    async for chunk in chunks:
        received = received or bool(chunk)
        data = chunk
        while data:
            in_member = True
            try:
                out = inflater.decompress(data, MAX_INFLATE_STEP)
            except zlib.error as exc:
                raise StopError(f"result file is not valid gzip: {exc}") from exc
            if out:
                yield out
            if inflater.eof:  # next gzip member, if any
                data = inflater.unused_data
                inflater = zlib.decompressobj(wbits=GZIP_WBITS)
                in_member = False
            else:
                data = inflater.unconsumed_tail
    tail = inflater.flush()
    if tail:
        yield tail
    if in_member and not inflater.eof:  # most likely the download was cut: worth another try
        raise RetryableError("result file is truncated: its gzip stream ends before its last member does")
    if not received:  # even an export of nothing is a gzip file (20 bytes at least)
        raise RetryableError("result file is empty: no gzip stream at all")


async def text_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    """Split byte chunks into (line number, line) for each line that is not blank.

    Unparsed: a retry skips the lines an earlier attempt emitted without parsing them (at 90% of a
    million lines, that parsed 900,000 lines only to drop them), and a line that is not JSON can be
    skipped too (parsed first, it failed every attempt whatever the cursor said)."""
    pending = b""
    number = 0
    async for chunk in chunks:
        pending += chunk
        if b"\n" not in chunk:  # a long line across many chunks: do not re-split it every time
            continue
        *lines, pending = pending.split(b"\n")
        for line in lines:
            number += 1
            if line.strip():
                yield number, line
    if pending.strip():
        yield number + 1, pending


class ParseCursor(BaseModel):
    """Where an earlier attempt stopped (the ``cursor`` header of a retry or of a trashed message)."""

    model_config = ConfigDict(extra="ignore")
    #: Lines it emitted: the file at ``resultUrl`` does not change, so the next attempt skips them.
    skip: int = Field(default=0, ge=0)
    #: It emitted the whole file; only recording the export failed.
    sent: bool = False


class _Progress:
    def __init__(self, emitted: int) -> None:
        #: Lines of the file emitted so far, by this attempt and the ones before it.
        self.emitted = emitted
        #: The hop ended before the file did (see ``MAX_HOP_SECONDS``).
        self.more = False


class ShoptetParseJsonLines(Batch):
    """Input ``data.job``; emits the parsed lines in lists of up to 50 (fewer when they are large,
    so that a message stays under the broker's record limit). Job not completed -> 1006.

    A retry goes on after the lines already emitted (a download cut at 90% of a million lines sent
    them all again, on every retry); a replay from trash too. A line that is not JSON stops the run
    after the lines before it went out, and its trash entry's cursor says how to replay without it.
    A hop ends after ``MAX_HOP_SECONDS`` and goes on in the next one from where it stopped
    (``BATCH_CURSOR_WITH_ITEMS``), so that a stop or a rebalance, which wait for the records
    running, never cut a big file off half-way: started again from its first line, it went to
    the sink twice.
    """

    name = "shoptet-parse-json-lines"
    Options = NoOptions

    async def process(self, message: Message, ctx: NodeContext, emit: Emit) -> Result:
        job = parse_body(Job, message.body, self.name)
        if job.status != "completed":
            # Orchesty's words, then what an operator needs to know why: the status and Shoptet's log
            why = f" Its status is {job.status}" + (f"; Shoptet's log: {job.log}" if job.log else ".")
            return Result(
                code=ResultCode.STOP_AND_FAIL, message=f"Job [jobId={job.jobId}] from shoptet is not completed.{why}"
            )
        if not job.resultUrl:
            return Result(code=ResultCode.STOP_AND_FAIL, message=f"Job [jobId={job.jobId}] has no resultUrl.")
        cursor = parse_cursor(ParseCursor, message, self.name)
        progress = _Progress(cursor.skip)
        if not cursor.sent:
            try:
                await self._emit_file(ctx, job.resultUrl, emit, progress)
            except NodeError as exc:
                if exc.resume is None and progress.emitted > cursor.skip:
                    exc.resume = ParseCursor(skip=progress.emitted).model_dump()
                raise
        if progress.more:
            return Result(
                code=ResultCode.BATCH_CURSOR_WITH_ITEMS,
                cursor=ParseCursor(skip=progress.emitted).model_dump(exclude={"sent"}),
                message=f"job {job.jobId}: {progress.emitted} line(s) so far",
            )
        # the whole file is read and its items are with the broker: a full export moves the change
        # feed on (before they are, a worker that died would lose them once the file expired)
        await ctx.delivered()
        try:
            await complete_export(ctx, ctx.require_install(), message.body)
        except NodeError as exc:
            exc.resume = ParseCursor(skip=progress.emitted, sent=True).model_dump()
            raise
        return Result(message=f"job {job.jobId}: {progress.emitted} line(s)")

    async def _emit_file(self, ctx: NodeContext, url: str, emit: Emit, progress: _Progress) -> None:
        skip = progress.emitted
        started = time.monotonic()
        deadline: float | None = None  # set at the first line this hop emits (see below)
        seen = size = 0
        batch: list[Any] = []

        async def flush() -> None:
            nonlocal batch, size
            if batch:
                await emit(batch)
                progress.emitted += len(batch)
                batch, size = [], 0

        async with ctx.require_shoptet().stream(url) as response:
            # aiter_raw: the bytes as sent; the file itself is gzip, whatever Content-Encoding says.
            async for number, line in text_lines(gunzip(response.aiter_raw())):
                seen += 1
                if seen <= skip:
                    continue
                if deadline is None:
                    # skipping what earlier hops sent (downloaded again) may take a hop's whole time:
                    # each hop still emits for a while, and ends within the graceful stop if it can
                    deadline = max(started + MAX_HOP_SECONDS, time.monotonic() + MIN_HOP_EMIT_SECONDS)
                if batch and (len(batch) == LINES_PER_MESSAGE or size + len(line) > MAX_MESSAGE_BYTES):
                    await flush()
                    if time.monotonic() > deadline:
                        progress.more = True
                        return
                try:
                    item = json.loads(line)
                except ValueError as exc:
                    await flush()  # the lines before it go out; the cursor then points at it
                    raise StopError(
                        f"result file line {number} is not JSON: {exc}; to leave it out, replay with "
                        f"--cursor '{{\"skip\": {seen}}}'",
                        resume=ParseCursor(skip=seen - 1).model_dump(exclude={"sent"}),
                    ) from exc
                batch.append(item)
                size += len(line) + 1
        await flush()
