"""Inbound topics: a record that no active topology starts on is kept in trash, not dropped."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiokafka.structs import ConsumerRecord

from worker.inbound import InboundBridge
from worker.store.base import TrashEntry
from worker.trash import replay_message


class Store:
    def __init__(self) -> None:
        self.trash: list[TrashEntry] = []

    async def add_trash(self, entry: TrashEntry) -> int:
        self.trash.append(entry)
        return len(self.trash)


async def test_a_record_for_a_disabled_topology_goes_to_trash_for_replay() -> None:
    store = Store()
    catalog = SimpleNamespace(active_all=lambda: [])  # the topology that starts on it is disabled
    bridge = InboundBridge(SimpleNamespace(catalog=catalog, store=store))  # type: ignore[arg-type]
    record: ConsumerRecord[bytes, Any] = ConsumerRecord(
        "erp.order-requests", 0, 7, 0, 0, b"shop-1", b'{"code": "1"}', None, 6, 13, ()
    )

    await bridge.handle(record)

    [entry] = store.trash
    assert entry.topic == "erp.order-requests"
    assert "no active topology" in entry.error_message
    replayed = replay_message(entry)  # replayable as stored, without an edited body
    assert replayed.body == {"code": "1"} and replayed.user == "shop-1"
