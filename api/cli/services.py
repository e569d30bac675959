"""`provenroute services status`: is each piece of infrastructure answering?"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass

import typer
from rich.console import Console
from rich.table import Table

from infra.settings import Settings
from streams.topics import ALL_TOPICS

app = typer.Typer(help="Local infrastructure (Kafka, PostgreSQL, Docker).", no_args_is_help=True)


@dataclass
class ServiceHealth:
    name: str
    ok: bool
    detail: str


async def _kafka(s: Settings) -> ServiceHealth:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 8)
        topics = set(await admin.list_topics())
    except Exception as e:
        return ServiceHealth("kafka", False, f"{s.kafka_bootstrap}: {type(e).__name__}")
    finally:
        await admin.close()
    missing = [t.name for t in ALL_TOPICS if s.topic(t.name) not in topics]
    if missing:
        return ServiceHealth("kafka", False, f"{s.kafka_bootstrap}: missing topics {missing}")
    return ServiceHealth("kafka", True, f"{s.kafka_bootstrap}, {len(ALL_TOPICS)} topics")


def _postgres(s: Settings) -> ServiceHealth:
    import psycopg

    try:
        with psycopg.connect(s.database_url, connect_timeout=5) as conn:
            row = conn.execute("select current_database(), version()").fetchone()
    except Exception as e:
        return ServiceHealth("postgres", False, f"{type(e).__name__}: {e}".splitlines()[0])
    assert row is not None
    return ServiceHealth("postgres", True, f"database {row[0]} ({row[1].split(' on ')[0]})")


def _docker(s: Settings) -> ServiceHealth:
    import docker
    from docker.errors import DockerException, ImageNotFound

    try:
        client = docker.from_env(timeout=10)
        version = client.version().get("Version", "?")
    except DockerException as e:
        return ServiceHealth("docker", False, f"engine not answering: {type(e).__name__}")
    try:
        client.images.get(s.base_image)
    except ImageNotFound:
        return ServiceHealth(
            "docker", False, f"engine {version}, base image {s.base_image} missing"
        )
    finally:
        client.close()
    return ServiceHealth("docker", True, f"engine {version}, base image {s.base_image}")


def collect_health(s: Settings) -> list[ServiceHealth]:
    return [asyncio.run(_kafka(s)), _postgres(s), _docker(s)]


@app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Check Kafka, PostgreSQL and Docker; exit 1 when any is not healthy."""
    health = collect_health(Settings())
    if as_json:
        typer.echo(json.dumps([asdict(h) for h in health], indent=2))
    else:
        table = Table(title="provenroute services")
        table.add_column("service")
        table.add_column("status")
        table.add_column("detail")
        for h in health:
            table.add_row(h.name, "[green]up[/]" if h.ok else "[red]down[/]", h.detail)
        Console().print(table)
    if not all(h.ok for h in health):
        raise typer.Exit(1)


@app.command("kafka-ready")
def kafka_ready_cmd(timeout: float = typer.Option(120.0, help="Seconds to wait.")) -> None:
    """Wait until Kafka accepts a topic creation and a produce (used by services-up)."""
    from streams.kafka_admin import kafka_ready

    s = Settings()
    try:
        asyncio.run(kafka_ready(s.kafka_bootstrap, s.topic_prefix, timeout))
    except TimeoutError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from e
    typer.echo(f"kafka ready at {s.kafka_bootstrap}", err=True)


@app.command("ensure-topics")
def ensure_topics_cmd() -> None:
    """Create provenroute's topics under the configured prefix if they are missing."""
    from streams.kafka_admin import ensure_topics

    s = Settings()
    for name in asyncio.run(ensure_topics(s.kafka_bootstrap, s.topic_prefix)):
        typer.echo(f"created topic {name}")
