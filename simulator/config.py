"""Everything that shapes one simulator run, in one pydantic model.

Defaults are Shoptet's documented limits, so that a test or a demo sees the real API's behaviour
unless it asks otherwise; benchmarks enlarge or disable the bucket explicitly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FaultKind = Literal["500", "503", "429", "423", "drop", "slow"]
ALL_FAULTS: tuple[FaultKind, ...] = ("500", "503", "429", "423", "drop", "slow")


class SimulatorConfig(BaseModel):
    """Seed data, limits, latency and faults of one simulator instance."""

    model_config = ConfigDict(validate_assignment=True)

    # seeded data
    eshops: int = Field(default=1, ge=1, description="number of e-shops")
    orders: int = Field(default=100, ge=0, description="seeded orders per e-shop")
    products: int = Field(default=50, ge=0, description="seeded products per e-shop (every 10th is a product set)")
    seed: int = Field(default=1, description="makes data, tokens and the fault sequence repeatable")
    first_eshop_id: int = Field(default=100001, description="eshop N (0-based) gets id first_eshop_id + N")
    epoch: datetime | None = Field(
        default=None, description="'now' for seeded timestamps; None = start time (keeps data inside the 30-day feed)"
    )
    creation_change_type: Literal["edit", "add"] = Field(
        default="edit", description="changeType of a creation in change feeds; the spec says creation shows as edit"
    )

    # latency and faults
    latency_ms: float = Field(default=0.0, ge=0, description="added to every Shoptet API request")
    fault_rate: float = Field(default=0.0, ge=0, le=1, description="share of API requests answered with a fault")
    fault_kinds: list[FaultKind] = Field(default_factory=lambda: list(ALL_FAULTS))
    slow_response_ms: float = Field(default=2000.0, ge=0, description="extra delay of the 'slow' fault")

    # Shoptet limits
    per_token_limit: int = Field(default=3, ge=1, description="concurrent requests per token before 429")
    per_ip_limit: int = Field(default=50, ge=1, description="concurrent requests per client IP before 429")
    bucket_enabled: bool = True
    bucket_size: int = Field(default=200, ge=1, description="leaky bucket capacity (drops) per token")
    bucket_drain_per_second: float = Field(default=10.0, gt=0)
    lock_seconds: float = Field(default=5.0, gt=0, description="longest a write lock (423) is held")

    # OAuth
    oauth_client_id: str = "sim-client"
    oauth_client_secret: str = "sim-secret"
    access_token_ttl_seconds: float = Field(default=1800.0, gt=0)
    max_valid_access_tokens: int = Field(default=5, ge=1)
    oauth_code_ttl_seconds: float = Field(default=300.0, gt=0)

    # jobs and webhooks
    job_delay_seconds: float = Field(default=1.0, ge=0, description="time until a snapshot job completes")
    require_job_webhook: bool = Field(default=True, description="snapshot without a job:finished webhook -> 403")
    webhook_max_attempts: int = Field(default=3, ge=1)
    webhook_retry_backoff_seconds: float = Field(default=0.5, ge=0, description="doubles after every failed attempt")
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)

    public_url: str | None = Field(default=None, description="own base URL for resultUrl; the server fills it in")


class RuntimeConfigUpdate(BaseModel):
    """Body of ``PUT /_sim/config``: any subset of the knobs that may change while serving."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float | None = Field(default=None, ge=0)
    fault_rate: float | None = Field(default=None, ge=0, le=1)
    fault_kinds: list[FaultKind] | None = None
    slow_response_ms: float | None = Field(default=None, ge=0)
    per_token_limit: int | None = Field(default=None, ge=1)
    per_ip_limit: int | None = Field(default=None, ge=1)
    bucket_enabled: bool | None = None
    bucket_size: int | None = Field(default=None, ge=1)
    bucket_drain_per_second: float | None = Field(default=None, gt=0)
    access_token_ttl_seconds: float | None = Field(default=None, gt=0)
    job_delay_seconds: float | None = Field(default=None, ge=0)
    require_job_webhook: bool | None = None
    webhook_max_attempts: int | None = Field(default=None, ge=1)
    webhook_retry_backoff_seconds: float | None = Field(default=None, ge=0)

    def apply(self, config: SimulatorConfig) -> None:
        for name, value in self.model_dump(exclude_none=True).items():
            setattr(config, name, value)
