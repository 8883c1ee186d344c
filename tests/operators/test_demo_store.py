"""`make run` on the embedded broker starts from a fresh store (`up --demo`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.support import settings_for_test
from worker.demo import DemoEnvironment


async def test_a_real_shop_on_the_embedded_broker_starts_from_a_fresh_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker keeps its topics in memory: orders listed (watermark moved) but not fetched yet
    when a run stopped were gone with it, and the next run, from the kept watermark, skipped them."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "var").mkdir()
    stale = tmp_path / "var" / "demo-shop.sqlite3"
    stale.write_text("last run's watermarks")
    settings = settings_for_test("", tmp_path, shoptet_private_api_token=SecretStr("real-token"))

    chosen = await DemoEnvironment(settings).start()

    assert chosen.database_url == "sqlite:///var/demo-shop.sqlite3" and not stale.exists()


async def test_a_real_shop_on_kafka_keeps_its_store(tmp_path: Path) -> None:
    settings = settings_for_test("kafka:9092", tmp_path, shoptet_private_api_token=SecretStr("real-token"))
    assert (await DemoEnvironment(settings).start()).database_url == settings.database_url
