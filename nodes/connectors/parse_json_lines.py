"""shoptet-parse-json-lines: stream a finished snapshot job's gzipped JSON Lines file.

Listed with the connectors (Orchesty's catalogue), but it emits many messages, so it is a Batch.
Fix: the file is streamed and decompressed incrementally, so memory stays flat whatever its size
(Orchesty downloaded and gunzipped the whole file in memory). Once the whole file of a full export
is read and the broker has every item, the change feed's watermark moves on
(:func:`nodes.snapshot.complete_export`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict

from nodes.shoptet import parse_body
from nodes.snapshot import complete_export
from worker.envelope import Message, ResultCode
from worker.errors import RetryableError, StopError
from worker.node import Batch, Emit, NodeContext, Result

LINES_PER_MESSAGE = 50
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


async def gunzip(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Incrementally inflate a gzip stream (several concatenated members allowed).

    A stream that stops inside a member is refused: cut at a line break, it parsed as a shorter
    file, and a full export's watermark then moved past the lines that never came.
    """
    inflater = zlib.decompressobj(wbits=GZIP_WBITS)
    in_member = False  # the current inflater has been given data of a member it has not ended
    async for chunk in chunks:
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


async def json_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[Any]:
    """Parse JSON Lines from byte chunks; blank lines are skipped, a bad line stops the run."""
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
                yield _parse_line(line, number)
    if pending.strip():
        yield _parse_line(pending, number + 1)


def _parse_line(line: bytes, number: int) -> Any:
    try:
        return json.loads(line)
    except ValueError as exc:
        raise StopError(f"result file line {number} is not JSON: {exc}") from exc


class ShoptetParseJsonLines(Batch):
    """Input ``data.job``; emits one message per 50 parsed lines (a list). Job not completed -> 1006."""

    name = "shoptet-parse-json-lines"

    async def process(self, message: Message, ctx: NodeContext, emit: Emit) -> Result:
        job = parse_body(Job, message.body, self.name)
        if job.status != "completed":
            return Result(
                code=ResultCode.STOP_AND_FAIL, message=f"Job [jobId={job.jobId}] from shoptet is not completed."
            )
        if not job.resultUrl:
            return Result(code=ResultCode.STOP_AND_FAIL, message=f"Job [jobId={job.jobId}] has no resultUrl.")
        lines = 0
        batch: list[Any] = []
        async with ctx.require_shoptet().stream(job.resultUrl) as response:
            # aiter_raw: the bytes as sent; the file itself is gzip, whatever Content-Encoding says.
            async for item in json_lines(gunzip(response.aiter_raw())):
                batch.append(item)
                lines += 1
                if len(batch) == LINES_PER_MESSAGE:
                    await emit(batch)
                    batch = []
        if batch:
            await emit(batch)
        # the whole file is read and its items are with the broker: a full export moves the change
        # feed on (before they are, a worker that died would lose them once the file expired)
        await ctx.delivered()
        await complete_export(ctx, ctx.require_install(), message.body)
        return Result(message=f"job {job.jobId}: {lines} line(s)")
