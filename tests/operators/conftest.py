"""CLI commands call ``settings_from_env()``, which points structlog at the ``sys.stderr`` of the
moment: CliRunner's capture, closed once the command returns. Restore the previous configuration
so later log lines (in these tests or the next ones) do not write to a closed file."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _keep_structlog_config() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
