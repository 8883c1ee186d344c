"""Small asyncio helpers the background loops share."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


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
