"""Encryption of secrets at rest (tokens, client secrets) with a key from settings.

Fernet gives authenticated encryption with a random IV, so the same token stored twice yields two
different ciphertexts and a tampered row fails loudly instead of decrypting to garbage. Several
comma-separated keys are accepted (newest first) so that a key can be rotated without downtime.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import structlog
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from worker.settings import Settings

log = structlog.get_logger(__name__)


class SecretKeyError(RuntimeError):
    """The secret key is missing or unusable; the worker must not start without one."""


class SecretBox:
    """Encrypts and decrypts strings. Holds the key, so it never shows it in a repr."""

    def __init__(self, keys: str | bytes) -> None:
        raw = keys.decode() if isinstance(keys, bytes) else keys
        parts = [part.strip() for part in raw.split(",") if part.strip()]
        if not parts:
            raise SecretKeyError("the secret key is empty")
        try:
            self._fernet = MultiFernet([Fernet(part.encode()) for part in parts])
        except (ValueError, TypeError) as exc:
            raise SecretKeyError(
                "SECRET_KEY must be a Fernet key (32 url-safe base64-encoded bytes); "
                'generate one with: python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())"'
            ) from exc

    def __repr__(self) -> str:
        return "SecretBox(***)"

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise SecretKeyError("a stored secret cannot be decrypted: wrong SECRET_KEY?") from exc

    def rotate(self, ciphertext: str) -> str:
        """The same secret encrypted under the first (newest) key."""
        try:
            return self._fernet.rotate(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise SecretKeyError("a stored secret cannot be decrypted: wrong SECRET_KEY?") from exc

    @staticmethod
    def generate_key() -> str:
        return Fernet.generate_key().decode()


def load_secret_key(settings: Settings) -> str:
    """The key from ``SECRET_KEY``; in development a local key file is created when none is set.

    Production refuses to start without an explicit key: a generated key on a disposable container
    disk would make every stored secret unreadable after the next deploy.
    """
    if settings.secret_key is not None and settings.secret_key.get_secret_value().strip():
        return settings.secret_key.get_secret_value()
    if settings.environment == "production":
        raise SecretKeyError(
            "SECRET_KEY is required in production (it encrypts the install store's secrets); "
            'generate one with: python -c "from cryptography.fernet import Fernet; '
            'print(Fernet.generate_key().decode())"'
        )
    return _development_key(settings.secret_key_file)


def _development_key(path: Path) -> str:
    """The key in ``path``, created there on first use.

    Written to a file of its own and linked into place, which fails if ``path`` exists: created in
    place and written afterwards, a second process starting at that moment read it empty and
    exited ("the secret key is empty"), and a crash between the two left it empty for good.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = SecretBox.generate_key()
        fd, written = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(key + "\n")
            os.link(written, path)
        except FileExistsError:  # another process created it a moment ago: that one is the key
            pass
        else:
            log.warning("created a development secret key; set SECRET_KEY in production", path=str(path))
            return key
        finally:
            os.unlink(written)
    key = path.read_text().strip()
    if not key:
        raise SecretKeyError(f"the development secret key file {path} is empty; delete it or set SECRET_KEY")
    return key


def secret_box_from_settings(settings: Settings) -> SecretBox:
    return SecretBox(load_secret_key(settings))
