"""Replaying a trashed message: back to its original topic with its original headers."""

from __future__ import annotations

from typing import Any

from worker.envelope import H, Message
from worker.starter import Starter
from worker.store import InstallStore, TrashEntry

#: Bookkeeping of the failed attempt that must not follow the message back.
_RESET = (H.REPEAT_HOPS, H.RESULT_CODE, H.RESULT_MESSAGE, H.RETRY_TARGET_TOPIC, H.RETRY_DUE_AT)


class NothingToReplay(ValueError):
    pass


def replay_message(entry: TrashEntry, body: Any = None) -> Message:
    if body is None:
        if entry.body is None:
            raise NothingToReplay(
                f"trash entry {entry.id} has no decodable body ({entry.error_message}); pass an edited body"
            )
        body = entry.body
    headers = {k: v for k, v in entry.headers.items() if k not in _RESET}
    if entry.key and H.USER not in headers:
        headers[H.USER] = entry.key
    return Message(body=body, headers=headers)


async def replay(store: InstallStore, sender: Starter, entry: TrashEntry, body: Any = None) -> Message:
    """Publish again, wait for the broker, and only then remove the entry (nothing lost on a crash)."""
    message = replay_message(entry, body)
    future = await sender.send(entry.topic, message)
    await future
    if entry.id is not None:
        await store.remove_trash(entry.id)
    return message
