"""Settings from environment variables and ``.env`` (pydantic-settings).

Names match what operators already know: ``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``,
``REDIS_URL``. Everything has an embedded default so that ``make run`` needs no set-up.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"

    # Kafka -------------------------------------------------------------------------------------
    #: Empty: start the embedded Tansu broker.
    kafka_bootstrap_servers: str = ""
    kafka_topic_prefix: str = "shoptet"
    kafka_partitions: int = 6
    kafka_replication_factor: int = 1
    #: A group join takes about half of this on the embedded broker; failover after a crash takes all of it.
    kafka_session_timeout_ms: int = 6_000
    #: How long the group waits in a rebalance for a member to finish the records it is running
    #: (a Shoptet call may take 30 s). Cut short, a record still running was read and run again by
    #: the partition's next owner: a stock movement applied twice.
    kafka_rebalance_timeout_ms: int = 60_000
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None

    # storage -----------------------------------------------------------------------------------
    #: SQLite file by default; a postgresql:// URL for many workers.
    #: Kept out of ``repr``: a PostgreSQL URL carries its password.
    database_url: str = Field(default="sqlite:///var/shoptet-worker.sqlite3", repr=False)
    #: Fernet key that encrypts secrets at rest. Required in production.
    secret_key: SecretStr | None = None
    secret_key_file: Path = Path("var/secret.key")
    #: Shared per-token limiter across worker processes; empty means in-process.
    redis_url: str = Field(default="", repr=False)
    #: Namespace of the limiter's keys, so several deployments can share one Redis.
    redis_limiter_prefix: str = "shoptet-worker:limiter:"

    # Shoptet -----------------------------------------------------------------------------------
    shoptet_api_url: str = "https://api.myshoptet.com"
    shoptet_timeout_seconds: float = 30.0
    shoptet_max_connections_per_token: int = 3
    shoptet_max_connections_per_host: int = 50
    #: Premium token of the shop that `make run` connects when set (otherwise the demo runs).
    shoptet_private_api_token: SecretStr | None = None
    #: OAuth addon: client credentials and the redirect URL registered with Shoptet.
    shoptet_oauth_client_id: str | None = None
    shoptet_oauth_client_secret: SecretStr | None = None
    shoptet_oauth_redirect_url: str | None = None
    #: OAuth server base URL (``<url>/action/ApiOAuthServer/...``): the simulator in tests, or the
    #: addon's OAuth e-shop. Empty: each install's own ``eshopUrl`` (the code exchange needs it set).
    shoptet_oauth_server_url: str | None = None
    #: Seconds before expiry at which an addon access token is refreshed.
    shoptet_token_refresh_margin_seconds: float = 30.0

    # HTTP app (ingress, metrics, health) --------------------------------------------------------
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    #: Base URL Shoptet calls for webhooks, e.g. https://worker.example.com.
    public_base_url: str = "http://127.0.0.1:8080"
    #: API key for POST /topologies/{name}/run; empty disables the endpoint.
    api_key: SecretStr | None = None
    webhook_max_body_bytes: int = 1_000_000
    webhook_dedup_window_seconds: float = 600.0
    signature_key_grace_seconds: float = 3600.0
    #: How long a webhook waits for the broker to acknowledge its starts before answering 503.
    webhook_publish_timeout_seconds: float = 10.0

    # runtime -----------------------------------------------------------------------------------
    topology_dir: Path = Path("topology")
    default_retry_interval_seconds: float = 60.0
    default_retry_max_hops: int = 10
    graceful_timeout_seconds: float = 30.0
    #: Records each node consumer reads ahead of the ones running (queued per install, so one
    #: e-shop's backlog does not leave another's token idle), and the bytes all consumers of the
    #: process may hold together (keys, values and about 2 KiB per record for the rest).
    consumer_read_ahead_records: int = Field(default=50_000, ge=1)
    consumer_read_ahead_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    #: Run only these node types in this process (comma separated); empty runs all.
    nodes: str = ""

    # logs --------------------------------------------------------------------------------------
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_capitals(cls, value: object) -> object:
        """Any case, and the standard library's other names for two levels (``warn``, ``fatal``)."""
        if not isinstance(value, str):
            return value
        level = value.strip().upper()
        return {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(level, level)

    demo_orders: int = Field(default=500, description="orders seeded in the demo simulator")

    @property
    def embedded_broker(self) -> bool:
        return not self.kafka_bootstrap_servers

    def topic(self, *parts: str) -> str:
        return ".".join((self.kafka_topic_prefix, *parts))


@lru_cache
def get_settings() -> Settings:
    return Settings()
