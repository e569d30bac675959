"""Shared fixtures. Integration tests use the one broker, Postgres and Docker engine that
`make services-up` started; each test owns a unique topic prefix and schema."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from infra.settings import Settings, assume_dev

# The suite runs on the development placeholder secrets (and so do the child processes it
# starts, which inherit the environment).
assume_dev()


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings()


def unique_name(stem: str) -> str:
    return f"{stem}{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def kafka_prefix(base_settings: Settings) -> AsyncIterator[str]:
    """A fresh topic prefix with provenroute's topics created under it."""
    from streams.kafka_admin import ensure_topics

    prefix = unique_name("t") + "."
    await ensure_topics(base_settings.kafka_bootstrap, prefix)
    yield prefix
    await delete_topics_with_prefix(base_settings.kafka_bootstrap, prefix)


async def delete_topics_with_prefix(bootstrap: str, prefix: str) -> None:
    """Best-effort clean-up, so a long session does not pile partitions onto the broker."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    except Exception as e:  # a leftover topic must not fail the test that used it
        print(f"could not delete topics {prefix}*: {e!r}")
    finally:
        await admin.close()


@pytest.fixture
def pg_schema(base_settings: Settings) -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped afterwards."""
    import psycopg

    schema = unique_name("s_")
    with psycopg.connect(base_settings.database_url, autocommit=True) as conn:
        conn.execute(f'create schema "{schema}"')
    yield schema
    with psycopg.connect(base_settings.database_url, autocommit=True) as conn:
        conn.execute(f'drop schema "{schema}" cascade')


@pytest.fixture
def settings_for(base_settings: Settings):  # type: ignore[no-untyped-def]
    """Settings bound to a test's own prefix/schema."""

    def make(prefix: str | None = None, schema: str | None = None) -> Settings:
        update: dict[str, object] = {}
        if prefix is not None:
            update["topic_prefix"] = prefix
        if schema is not None:
            update["db_schema"] = schema
        return base_settings.model_copy(update=update)

    return make


def pytest_report_header(config: pytest.Config) -> str:
    return f"provenroute: kafka={Settings().kafka_bootstrap} ci={os.environ.get('CI', '')}"
