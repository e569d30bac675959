"""A worker declares its tables' changelogs, and waits for leaders, before Faust starts.

CI once rejected a valid first command with Faust's `PartitionsMismatch`: the worker's
consumer had fetched metadata while the fresh `decided` changelog had no leader, took it for
a topic of 0 partitions and kept that for minutes.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaClient
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from infra.settings import Settings
from streams.bootstrap import build_worker
from streams.kafka_admin import topics_led
from streams.topics import COMMANDS, EVENTS


async def test_declare_topics_creates_each_changelog_led_and_shaped_like_its_source(
    kafka_prefix: str, settings_for: Any
) -> None:
    settings: Settings = settings_for(prefix=kafka_prefix)
    worker = build_worker(settings)
    changelogs = {name: partitions for name, partitions, _ in worker.changelog_topics()}
    # Faust's own naming, so Faust finds them and creates nothing of its own.
    expected = {
        f"{kafka_prefix}worker-{table}-changelog": source.partitions
        for table, source in [
            ("admin", COMMANDS),
            ("decided", COMMANDS),
            ("runs", EVENTS),
            ("results", EVENTS),
            ("released", EVENTS),
        ]
    }
    assert changelogs == expected

    await worker.declare_topics()

    client = AIOKafkaClient(bootstrap_servers=settings.kafka_bootstrap)
    await client.bootstrap()
    try:
        cluster = await client.fetch_all_metadata()
        for name, partitions in expected.items():
            assert cluster.partitions_for_topic(name) == set(range(partitions)), name
    finally:
        await client.close()

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in expected]
        )
        policies = {
            resource[3]: {entry[0]: entry[1] for entry in resource[4]}["cleanup.policy"]
            for response in described
            for resource in response.resources
        }
    finally:
        await admin.close()
    assert policies == dict.fromkeys(expected, "compact")


async def test_topics_led_names_the_topic_that_never_got_a_leader(
    kafka_prefix: str, base_settings: Settings
) -> None:
    missing = f"{kafka_prefix}never-created"
    with pytest.raises(TimeoutError, match="never-created"):
        await topics_led(base_settings.kafka_bootstrap, [missing], timeout_s=1.0)
