"""Runtime settings from environment variables (prefix PROVENROUTE_), with local defaults.

Built by the app factory or CLI command that needs them, never at import time. The secrets'
defaults are development placeholders; they are refused unless `PROVENROUTE_ENV=dev`, so a
deployment that forgets one fails at start instead of running on a public secret.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

ENV_VAR: Final = "PROVENROUTE_ENV"
DEV: Final = "dev"
DEV_SECRETS: Final = frozenset({"dev-internal-secret", "dev-admin-token"})
"""Development placeholders (and any key starting with `sim-`, the simulated provider's)."""


class DevelopmentSecretRefused(RuntimeError):
    """A development placeholder secret outside `PROVENROUTE_ENV=dev`.

    Not a ValueError on purpose: pydantic would wrap that in a ValidationError that prints
    the raw input, secrets included."""


def _is_dev_secret(value: SecretStr) -> bool:
    secret = value.get_secret_value()
    return secret in DEV_SECRETS or secret.startswith("sim-")


def assume_dev() -> None:
    """For commands that only ever run the local, SIMULATED stack (the demo, the simulated
    provider, the benches): development settings unless the environment names another."""
    os.environ.setdefault(ENV_VAR, DEV)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PROVENROUTE_", env_nested_delimiter="__", extra="ignore"
    )

    env: str = "production"
    """`dev` allows the development placeholder secrets (the demo and the tests set it)."""

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

    run_stall_resend_s: float = Field(default=60.0, gt=0)
    """A run with no result for this long re-sends its open jobs no live worker holds."""
    worker_job_slots: int = Field(default=4, ge=1, le=64)
    """Case jobs one worker runs at once (a run's maxConcurrency can only lower it)."""
    worker_startup_timeout_s: float = 120.0
    worker_decider_cases: str | None = None
    """Comma-separated decider case ids this worker's runs use instead of the whole dataset
    (a quick subset, e.g. for agent-CLI harness trials); unset: every case."""

    sim_port: int = 8787
    api_port: int = 8080

    # -- decide service (api/app.py) ---------------------------------------------------------
    run_max_ungraded_share: float = Field(default=0.5, ge=0.0, le=1.0)
    """A run that loses more than this share of its expected results to dead-lettered jobs
    (or grades nothing) ends as failed and publishes nothing."""
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
    """Decision events and session updates waiting for Kafka; beyond it decision events are
    spooled to `decide_spool_dir` (and session updates dropped)."""
    decide_spool_dir: Path = PROJECT_ROOT / ".state" / "decide-spool"
    """Where decision events that Kafka did not take yet wait (one subdirectory per topic
    prefix); any decide process of that prefix sends them again. Keep it on a volume."""
    gateway_fallback_model: str = "sim/balanced"
    """Model the gateway client serves when /decide answers null, late or not at all."""

    @model_validator(mode="after")
    def _no_development_secrets(self) -> Self:
        if self.env == DEV:
            return self
        # Names only: a refused value is never echoed (a real key may start with `sim-`).
        found = [
            name
            for name, value in (
                ("PROVENROUTE_INTERNAL_SECRET", self.internal_secret),
                ("PROVENROUTE_ADMIN_TOKEN", self.admin_token),
                ("PROVENROUTE_PROVIDER_API_KEY", self.provider_api_key),
            )
            if _is_dev_secret(value)
        ]
        if any(_is_dev_secret(v) for v in self.provider_credentials.values()):
            found.append("PROVENROUTE_PROVIDER_CREDENTIALS")
        if found:
            raise DevelopmentSecretRefused(
                f"development secrets refused outside {ENV_VAR}={DEV}: set "
                + ", ".join(found)
                + f" to real secrets (or {ENV_VAR}={DEV} for a local development stack)"
            )
        return self

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"
