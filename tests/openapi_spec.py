"""Where the tests find Shoptet's official OpenAPI description.

A copy lives in the repository (``tests/data/shoptet-openapi``, taken unchanged; see its README) so
that a fresh clone tests against it with nothing else on the machine. ``SHOPTET_OPENAPI`` points the
tests at another copy, e.g. a newer one, to see what changed.
"""

from __future__ import annotations

import os
from pathlib import Path

VENDORED = Path(__file__).parent / "data" / "shoptet-openapi" / "openapi.yaml"
SPEC_PATH = Path(os.environ.get("SHOPTET_OPENAPI") or VENDORED)
