"""Runtime settings from environment variables (prefix PROVENROUTE_), with local defaults.

Built by the app factory or CLI command that needs them, never at import time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PROVENROUTE_", env_nested_delimiter="__", extra="ignore"
    )

    kafka_bootstrap: str = "127.0.0.1:9092"
    """Kafka bootstrap servers (comma separated)."""
    database_url: str = "postgresql://provenroute@127.0.0.1:5432/provenroute"
    """PostgreSQL connection URL."""
    db_schema: str = "public"
    """Schema the projections live in (tests and replay use their own)."""
    topic_prefix: str = "provenroute."
    """Prefix of every topic name, so several deployments or tests share one broker."""

    provider_base_url: str = "http://127.0.0.1:8787/v1"
    """OpenAI-compatible endpoint (OpenRouter: https://openrouter.ai/api/v1)."""
    provider_api_key: SecretStr = SecretStr("sim-local-key")
    """Key for /decide's classifier calls and classifier benchmarks. Never logged."""
    provider_credentials: dict[str, SecretStr] = Field(
        default_factory=lambda: {"sim-benchmark": SecretStr("sim-benchmark-key")}
    )
    """Named credentials; a config's benchmarkIdentity names the one decider runs use."""
    provider_timeout_s: float = 60.0
    provider_max_retries: int = 2
    price_table_file: Path | None = None
    """Optional YAML {model: {input_per_mtok, output_per_mtok}} used when usage has no cost."""

    docker_image: str = "provenroute/runner:latest"
    """Image decider jobs run in (built by `make image`)."""
    base_image: str = "provenroute/base:bookworm"

    internal_secret: SecretStr = SecretStr("dev-internal-secret")
    """Shared secret gateways present to POST /decide."""
    admin_token: SecretStr = SecretStr("dev-admin-token")
    """Bearer token of the admin API."""

    worker_job_slots: int = Field(default=4, ge=1, le=64)
    """Case jobs one worker runs at once (a run's maxConcurrency can only lower it)."""
    worker_startup_timeout_s: float = 120.0
    worker_decider_cases: str | None = None
    """Comma-separated decider case ids this worker's runs use instead of the whole dataset
    (a quick subset, e.g. for agent-CLI harness trials); unset: every case."""

    sim_port: int = 8787
    api_port: int = 8080

    # -- decide service (api/app.py) ---------------------------------------------------------
    decide_budget_ms: int = Field(default=2000, ge=100, le=60_000)
    """Longest time POST /decide may take; the gateway waits this long at most."""
    decide_margin_ms: int = Field(default=150, ge=0, le=5_000)
    """Kept free of the budget for everything around the classifier call (answer, network)."""

    @property
    def classifier_deadline_ms(self) -> int:
        """How long /decide waits for its classifier (budget minus margin); the classifier
        benchmark measures every call against the same deadline."""
        return self.decide_budget_ms - self.decide_margin_ms

    default_classifier_model: str = "sim/flash-lite"
    """Classifier model when neither an admin override nor a benchmark winner exists."""
    decide_replica_id: str | None = None
    """Name of this decide replica in logs, /healthz and the `X-Provenroute-Replica` answer
    header; default `<hostname>-<pid>`."""
    decide_session_ttl_s: float = Field(default=86_400.0, ge=10.0)
    """A conversation not served for this long is forgotten (tombstoned on the sessions log):
    it bounds the sessions every replica holds and reads at start."""
    decide_startup_timeout_s: float = Field(default=60.0, gt=0)
    """How long start-up waits for the sessions log and a routing-table load before serving
    anyway (not ready until both happened; /decide answers fresh picks meanwhile)."""
    decide_max_body_bytes: int = Field(default=1_000_000, ge=1_000)
    """Largest accepted /decide request body; larger ones get 413."""
    decide_refresh_interval_s: float = Field(default=30.0, gt=0)
    """Periodic reload of routing table, winner and override (NOTIFY is the fast path)."""
    decide_event_queue_size: int = Field(default=50_000, ge=100)
    """Decision events and session updates waiting for Kafka; beyond it they are dropped."""
    gateway_fallback_model: str = "sim/balanced"
    """Model the gateway client serves when /decide answers null, late or not at all."""

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"
