"""`shoptet-worker secrets rotate`: a key rotation that can finish (the old key can be dropped)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from tests.store.test_sql_store import SECRET, _install
from worker.cli import app
from worker.settings import Settings
from worker.store import open_store
from worker.store.crypto import SecretBox, SecretKeyError

runner = CliRunner()


def _settings(url: str, key: str) -> Settings:
    return Settings(database_url=url, secret_key=key)


def test_rotate_then_the_new_key_alone_reads_every_secret(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    old, new = SecretBox.generate_key(), SecretBox.generate_key()

    async def install_under_old() -> None:
        store = await open_store(_settings(url, old))
        await store.add_install(_install("shop"))
        await store.close()

    asyncio.run(install_under_old())

    def cli(key: str) -> tuple[int, str, BaseException | None]:
        result = runner.invoke(app, ["secrets", "rotate"], env={"DATABASE_URL": url, "SECRET_KEY": key})
        return result.exit_code, result.output, result.exception

    code, output, error = cli(new)  # the new key alone: refused, it decrypts nothing stored
    assert isinstance(error, SecretKeyError) and "decrypts none" in str(error)
    code, output, error = cli(f"{new},{old}")
    assert code == 0, output
    assert "re-encrypted 1 install secret(s)" in output

    async def read_with_new() -> dict[str, str]:
        store = await open_store(_settings(url, new))
        install = await store.get_install("shop", "shoptet-premium")
        await store.close()
        assert install is not None
        return install.secrets

    assert asyncio.run(read_with_new()) == {"token": SECRET}
