"""docker-compose.yaml cannot run here (no registry); check it agrees with the local set-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_services_and_healthchecks() -> None:
    services = _compose()["services"]
    assert {"kafka", "postgres", "worker", "api"} <= set(services)
    for name in ("kafka", "postgres", "api"):
        assert "healthcheck" in services[name], name
    for name in ("worker", "api"):
        deps = services[name]["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy"
        assert deps["postgres"]["condition"] == "service_healthy"
        assert services[name]["build"] == "."


def test_ports_match_local_defaults() -> None:
    s = Settings()
    services = _compose()["services"]
    kafka_port = s.kafka_bootstrap.rsplit(":", 1)[1]
    assert f"127.0.0.1:{kafka_port}:9092" in services["kafka"]["ports"]
    assert "127.0.0.1:5432:5432" in services["postgres"]["ports"]
    assert ":5432/" in s.database_url
    assert f"127.0.0.1:{s.api_port}:8080" in services["api"]["ports"]
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert "KRaft" not in services["kafka"]["environment"]  # configured by roles, not a flag
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_env_names_are_settings_fields_and_secrets_are_required() -> None:
    env = _compose()["services"]["worker"]["environment"]
    fields = set(Settings.model_fields)
    for key in env:
        assert key.startswith("PROVENROUTE_"), key
        assert key.removeprefix("PROVENROUTE_").lower() in fields, key
    for secret in (
        "PROVENROUTE_PROVIDER_API_KEY",
        "PROVENROUTE_PROVIDER_CREDENTIALS",
        "PROVENROUTE_INTERNAL_SECRET",
        "PROVENROUTE_ADMIN_TOKEN",
    ):
        assert ":?" in env[secret], f"{secret} must be required with ${{VAR:?}}"
    assert env["PROVENROUTE_TOPIC_PREFIX"] == Settings().topic_prefix
    # Compose runs outside development: the settings there would refuse a placeholder.
    assert "PROVENROUTE_ENV" not in env
