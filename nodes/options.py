"""The topology ``options`` of the built-in nodes, checked at deploy (see ``Node.Options``).

Strict types: the nodes read the options as YAML gives them, so ``max_pages_per_hop: "20"`` (a
string) meant no limit at all, in silence; it is refused instead.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PagingOptions(_Options):
    max_pages_per_hop: StrictInt | None = Field(default=None, ge=1, description="pages read in one hop")
    page_concurrency: StrictInt | None = Field(default=None, ge=1, description="pages fetched at once")


class WebhookEventsOptions(_Options):
    events: list[StrictStr] | None = Field(default=None, description="only these webhook events")


class JobFinishedOptions(_Options):
    endpoints: list[StrictStr] | None = Field(default=None, description="only jobs of these endpoints")
    application: Literal["shoptet", "shoptet-premium"] | None = Field(
        default=None, description="whose installs the job belongs to"
    )


class StockMovementsOptions(_Options):
    report_unknown_products: StrictBool = Field(
        default=False, description="publish Shoptet's answer when every product is unknown"
    )
