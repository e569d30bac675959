"""Kafka readiness and topic creation, used by scripts/services.sh and the test set-up."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

import typer
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from api.settings import Settings
from streams.topics import ALL_TOPICS, TopicSpec

app = typer.Typer(help="Infrastructure helpers (readiness, topics).", no_args_is_help=True)


async def ensure_topics(
    bootstrap: str, prefix: str, specs: tuple[TopicSpec, ...] = ALL_TOPICS
) -> list[str]:
    """Create missing topics with their partitions and configs; returns the names created.

    Existing topics get their configs re-applied, so retention stays right even when a
    topic was auto-created by a client before set-up ran.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if f"{prefix}{s.name}" not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            name=f"{prefix}{s.name}",
                            num_partitions=s.partitions,
                            replication_factor=1,
                            topic_configs=s.config,
                        )
                        for s in missing
                    ]
                )
        to_alter = [s for s in specs if s not in missing and s.config]
        if to_alter:
            await admin.alter_configs(
                [
                    ConfigResource(ConfigResourceType.TOPIC, f"{prefix}{s.name}", configs=s.config)
                    for s in to_alter
                ]
            )
        return [f"{prefix}{s.name}" for s in missing]
    finally:
        await admin.close()


async def kafka_ready(bootstrap: str, prefix: str, timeout_s: float) -> None:
    """Ready = a client can create a topic and produce to it (not merely an open port)."""
    deadline = time.monotonic() + timeout_s
    probe = TopicSpec("readiness-probe", 1, key="none", value="probe")
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            await ensure_topics(bootstrap, prefix, (probe,))
            producer = AIOKafkaProducer(
                bootstrap_servers=bootstrap, enable_idempotence=True, request_timeout_ms=5000
            )
            await producer.start()
            try:
                await producer.send_and_wait(f"{prefix}readiness-probe", b"ping")
            finally:
                await producer.stop()
            return
        except (KafkaError, OSError) as e:
            last = e
            await asyncio.sleep(1.0)
    raise TimeoutError(f"kafka at {bootstrap} not ready after {timeout_s}s: {last!r}")


@app.command("kafka-ready")
def kafka_ready_cmd(timeout: float = typer.Option(90.0, help="Seconds to wait.")) -> None:
    """Wait until Kafka accepts a topic creation and a produce."""
    s = Settings()
    try:
        asyncio.run(kafka_ready(s.kafka_bootstrap, s.topic_prefix, timeout))
    except TimeoutError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from e
    typer.echo(f"kafka ready at {s.kafka_bootstrap}", err=True)


@app.command("ensure-topics")
def ensure_topics_cmd() -> None:
    """Create provenroute's topics (with the configured prefix) if missing."""
    s = Settings()
    created = asyncio.run(ensure_topics(s.kafka_bootstrap, s.topic_prefix))
    for name in created:
        typer.echo(f"created topic {name}", err=True)


if __name__ == "__main__":
    sys.exit(app())
