"""Secret encryption and where its key comes from."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from worker.settings import Settings
from worker.store.crypto import SecretBox, SecretKeyError, load_secret_key


def test_round_trip_with_random_iv_and_hidden_repr() -> None:
    box = SecretBox(SecretBox.generate_key())
    one, two = box.encrypt("tok"), box.encrypt("tok")
    assert one != two and "tok" not in one
    assert box.decrypt(one) == "tok"
    assert "***" in repr(box)


def test_rotation_reads_old_ciphertexts() -> None:
    old, new = SecretBox.generate_key(), SecretBox.generate_key()
    stored = SecretBox(old).encrypt("tok")
    assert SecretBox(f"{new},{old}").decrypt(stored) == "tok"
    with pytest.raises(SecretKeyError, match="wrong SECRET_KEY"):
        SecretBox(new).decrypt(stored)


def test_invalid_key_is_a_clear_error() -> None:
    with pytest.raises(SecretKeyError, match="Fernet key"):
        SecretBox("not-a-key")


def test_explicit_key_wins(tmp_path: Path) -> None:
    key = SecretBox.generate_key()
    settings = Settings(secret_key=SecretStr(key), secret_key_file=tmp_path / "k", environment="production")
    assert load_secret_key(settings) == key
    assert not (tmp_path / "k").exists()


def test_development_creates_a_key_file_with_a_warning(tmp_path: Path) -> None:
    settings = Settings(secret_key=None, secret_key_file=tmp_path / "var" / "secret.key")
    with capture_logs() as logs:
        key = load_secret_key(settings)
    assert any(entry["log_level"] == "warning" for entry in logs)
    assert (tmp_path / "var" / "secret.key").stat().st_mode & 0o777 == 0o600
    assert load_secret_key(settings) == key  # read back, not regenerated
    SecretBox(key)  # a usable key


def test_production_without_key_refuses_to_start(tmp_path: Path) -> None:
    settings = Settings(secret_key=None, secret_key_file=tmp_path / "k", environment="production")
    with pytest.raises(SecretKeyError, match="SECRET_KEY is required in production"):
        load_secret_key(settings)
    assert not (tmp_path / "k").exists()


def _key_from(path: str, start: Any) -> str:
    start.wait()
    return load_secret_key(Settings(secret_key=None, secret_key_file=Path(path)))


def test_processes_starting_at_once_all_get_the_one_development_key(tmp_path: Path) -> None:
    """Created in place and written afterwards, a process starting at that moment read the file
    empty and exited ("the secret key is empty"): 2 of 90 in a run of this shape."""
    context = multiprocessing.get_context("fork")
    for round_ in range(10):
        path = tmp_path / f"round-{round_}" / "secret.key"
        with context.Manager() as manager:
            start = manager.Barrier(6)
            with context.Pool(6) as pool:
                keys = pool.starmap(_key_from, [(str(path), start)] * 6)
        assert len(set(keys)) == 1 and keys[0] == path.read_text().strip()
        assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no leftover temporary file


def test_an_empty_development_key_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text("")
    with pytest.raises(SecretKeyError, match=f"{path} is empty"):
        load_secret_key(Settings(secret_key=None, secret_key_file=path))
