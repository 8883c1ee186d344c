"""The contract between nodes (through the shared Shoptet client) and an application.

An application knows how to authorise a request for one install and, for the OAuth addon, how to
throw away a token Shoptet called expired. The shared client in :mod:`applications.client` does
everything else (base URL, content type, limiter, status mapping), so applications stay small.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from worker.store import Install


class Application(ABC):
    name: ClassVar[str]

    @abstractmethod
    async def auth_headers(self, install: Install) -> dict[str, str]:
        """Headers that authorise one request for ``install`` (may fetch or refresh a token)."""

    async def token_expired(self, install: Install, headers: dict[str, str]) -> bool:
        """Shoptet answered 401 (its token expired or revoked) for a request sent with ``headers``.

        Return True when a retry with fresh headers can help (the addon drops its cached token);
        the premium token cannot be refreshed, so the default says no.
        """
        return False

    @abstractmethod
    def limiter_key(self, install: Install) -> str:
        """Identity of the token for the per-token limiter: installs sharing a token share a key."""
