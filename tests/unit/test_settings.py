"""Safe defaults: the development placeholder secrets are refused unless PROVENROUTE_ENV=dev."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from infra.settings import DevelopmentSecretRefused, Settings

ROOT = Path(__file__).resolve().parents[2]
REAL = {
    "PROVENROUTE_INTERNAL_SECRET": "gw-7c1f0b9e2d",
    "PROVENROUTE_ADMIN_TOKEN": "adm-4a8e6d21c3",
    "PROVENROUTE_PROVIDER_API_KEY": "sk-or-v1-0123456789",
    "PROVENROUTE_PROVIDER_CREDENTIALS": json.dumps({"bench": "sk-or-v1-9876543210"}),
}


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No PROVENROUTE_ENV and no secret in the environment (the suite itself runs as dev)."""
    for name in ("PROVENROUTE_ENV", *REAL):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_placeholders_are_refused_and_each_variable_is_named(
    production: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(DevelopmentSecretRefused) as refused:
        Settings()
    message = str(refused.value)
    for name in REAL:
        assert name in message
    assert "PROVENROUTE_ENV=dev" in message


def test_one_placeholder_left_is_named_alone_and_its_value_is_not_echoed(
    production: pytest.MonkeyPatch,
) -> None:
    for name, value in REAL.items():
        production.setenv(name, value)
    production.setenv("PROVENROUTE_PROVIDER_API_KEY", "sim-looks-like-a-real-key-123")
    with pytest.raises(DevelopmentSecretRefused) as refused:
        Settings()
    message = str(refused.value)
    assert "PROVENROUTE_PROVIDER_API_KEY" in message
    assert "PROVENROUTE_ADMIN_TOKEN" not in message
    assert "sim-looks-like-a-real-key-123" not in message
    assert all(value not in message for value in REAL.values())


def test_a_sim_credential_is_refused(production: pytest.MonkeyPatch) -> None:
    for name, value in REAL.items():
        production.setenv(name, value)
    production.setenv(
        "PROVENROUTE_PROVIDER_CREDENTIALS", json.dumps({"bench": "sk-x", "old": "sim-benchmark"})
    )
    with pytest.raises(DevelopmentSecretRefused, match="PROVENROUTE_PROVIDER_CREDENTIALS"):
        Settings()


def test_real_secrets_start_outside_development(production: pytest.MonkeyPatch) -> None:
    for name, value in REAL.items():
        production.setenv(name, value)
    s = Settings()
    assert s.env != "dev"
    assert s.admin_token.get_secret_value() == REAL["PROVENROUTE_ADMIN_TOKEN"]


def test_development_allows_the_placeholders(production: pytest.MonkeyPatch) -> None:
    production.setenv("PROVENROUTE_ENV", "dev")
    s = Settings()
    assert s.internal_secret.get_secret_value() == "dev-internal-secret"
    assert s.provider_api_key.get_secret_value().startswith("sim-")


def test_the_compose_environment_starts_once_its_required_secrets_are_given(
    production: pytest.MonkeyPatch,
) -> None:
    """docker-compose.yaml sets no PROVENROUTE_ENV: with the values its `${VAR:?}` demand,
    the settings it gives the services are accepted."""
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    given = {**REAL, "POSTGRES_PASSWORD": "pg-secret"}

    def interpolate(value: str) -> str:
        return re.sub(
            r"\$\{(\w+)(?::[?-]([^}]*))?\}",
            lambda m: given.get(m.group(1), m.group(2) or ""),
            value,
        )

    services = [n for n in compose["services"] if n.startswith(("api", "worker"))]
    assert {"api-1", "api-2", "worker"} <= set(services)
    for service in services:
        for name, value in compose["services"][service]["environment"].items():
            production.setenv(name, interpolate(str(value)))
        s = Settings()
        assert s.internal_secret.get_secret_value() == REAL["PROVENROUTE_INTERNAL_SECRET"], service
        assert set(s.provider_credentials) == {"bench"}, service
