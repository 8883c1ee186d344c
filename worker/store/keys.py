"""Naming conventions shared by the store and the applications that use its token cache."""

from __future__ import annotations


def token_key_prefix(user: str, application: str) -> str:
    """Token cache keys of one install start with this, so removing the install can drop them."""
    return f"{application}/{user}/"
