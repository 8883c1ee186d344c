"""Secret encryption and where its key comes from."""

from __future__ import annotations

from pathlib import Path

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
