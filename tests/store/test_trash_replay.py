"""Replaying a trash entry twice at once publishes it once (the store is real: SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from worker.envelope import Message
from worker.store import TrashEntry
from worker.store.sql import SqlInstallStore
from worker.topics import TopicNames
from worker.trash import NothingToReplay, replay


class SlowSender:
    """Sends nothing anywhere; each send takes a while, as the broker's acknowledgement does."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Message]] = []
        self.topics = TopicNames("t")

    async def send(self, topic: str, message: Message) -> asyncio.Future[Any]:
        await asyncio.sleep(0.05)
        self.sent.append((topic, message))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_two_replays_of_one_entry_at_once_publish_it_once(store: SqlInstallStore) -> None:
    entry_id = await store.add_trash(
        TrashEntry(topic="t.node.x", error_class="StopError", error_message="boom", key="shop-1", body={"n": 1})
    )
    entry = await store.get_trash(entry_id)
    assert entry is not None
    sender = SlowSender()

    outcomes = await asyncio.gather(
        replay(store, sender, entry),  # type: ignore[arg-type]
        replay(store, sender, entry),  # type: ignore[arg-type]
        return_exceptions=True,
    )

    assert [type(o) for o in outcomes].count(Message) == 1, outcomes
    [refused] = [o for o in outcomes if isinstance(o, Exception)]
    assert isinstance(refused, NothingToReplay)
    assert [(topic, m.body) for topic, m in sender.sent] == [("t.node.x", {"n": 1})]
    assert await store.get_trash(entry_id) is None
    with pytest.raises(NothingToReplay, match="replayed or discarded"):
        await replay(store, sender, entry)  # type: ignore[arg-type]
