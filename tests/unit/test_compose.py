"""docker-compose.yaml cannot run here (no registry); check it agrees with the local set-up."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _apis(services: dict[str, Any]) -> dict[str, Any]:
    return {name: spec for name, spec in services.items() if name.startswith("api")}


def test_services_and_healthchecks() -> None:
    services = _compose()["services"]
    assert {"kafka", "postgres", "worker"} <= set(services)
    apis = _apis(services)
    for name in ("kafka", "postgres", "worker", *apis):
        assert "healthcheck" in services[name], name
    for name in ("worker", *apis):
        deps = services[name]["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy"
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["topics"]["condition"] == "service_completed_successfully"
        assert services[name]["build"] == "."


def test_two_workers_and_two_api_replicas_each_checked_for_readiness() -> None:
    services = _compose()["services"]
    worker = services["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert "container_name" not in worker and "ports" not in worker  # replicas must not clash
    apis = _apis(services)
    assert len(apis) == 2, apis
    ids = {spec["environment"]["PROVENROUTE_DECIDE_REPLICA_ID"] for spec in apis.values()}
    assert ids == set(apis)  # each answer names the replica that gave it
    host_ports = [p.split(":")[1] for spec in apis.values() for p in spec["ports"]]
    assert len(set(host_ports)) == 2, host_ports
    for spec in apis.values():
        assert spec["command"][0] == "serve"
        assert "/readyz" in " ".join(spec["healthcheck"]["test"])  # ready, not only alive
        # Same deployment: same topics, hence the same sessions log.
        env = spec["environment"]
        assert (
            env["PROVENROUTE_TOPIC_PREFIX"]
            == services["worker"]["environment"]["PROVENROUTE_TOPIC_PREFIX"]
        )


def test_the_image_carries_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    for pattern in packages:
        name = pattern.rstrip("*")
        assert f"COPY {name} ./{name}" in dockerfile, name


def test_ports_match_local_defaults() -> None:
    s = Settings()
    services = _compose()["services"]
    kafka_port = s.kafka_bootstrap.rsplit(":", 1)[1]
    assert f"127.0.0.1:{kafka_port}:9092" in services["kafka"]["ports"]
    assert "127.0.0.1:5432:5432" in services["postgres"]["ports"]
    assert ":5432/" in s.database_url
    assert f"127.0.0.1:{s.api_port}:8080" in services["api-1"]["ports"]
    assert services["kafka"]["image"].startswith("apache/kafka:4.")


def _listeners(value: str) -> dict[str, str]:
    """`NAME://host:port,...` as {name: port}."""
    return {n: addr.rsplit(":", 1)[1] for n, addr in (x.split("://") for x in value.split(","))}


def test_kafka_runs_as_one_kraft_node_that_can_vote_for_itself() -> None:
    env = _compose()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    listeners = _listeners(env["KAFKA_LISTENERS"])
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) == set(protocols)
    # The single voter is this node, reached on its own controller listener.
    voter_id, voter_addr = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    assert int(voter_id) == int(env["KAFKA_NODE_ID"])
    assert voter_addr.rsplit(":", 1)[1] == listeners[controller]
    # Brokers talk on a listener that is advertised; the controller one is not.
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert controller not in advertised
    # A single node cannot hold more replicas than one.
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
    ):
        assert int(env[key]) == 1, key


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
