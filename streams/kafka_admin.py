"""Kafka readiness and topic creation: used by `provenroute services`, the worker and tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaClient, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.cluster import ClusterMetadata
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from streams.topics import ALL_TOPICS, TopicSpec


async def ensure_topics(
    bootstrap: str, prefix: str, specs: tuple[TopicSpec, ...] = ALL_TOPICS
) -> list[str]:
    """Create missing topics with their partitions and configs; returns the names created.

    Existing topics get their configs re-applied, so retention stays right even when a
    topic was auto-created by a client before set-up ran.
    """
    return await ensure_named_topics(
        bootstrap, [(f"{prefix}{s.name}", s.partitions, s.config) for s in specs]
    )


async def ensure_named_topics(
    bootstrap: str, topics: Sequence[tuple[str, int, Mapping[str, str]]]
) -> list[str]:
    """`ensure_topics` for full names: (name, partitions, config) each."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t[0] not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            name=name,
                            num_partitions=partitions,
                            replication_factor=1,
                            topic_configs=dict(config),
                        )
                        for name, partitions, config in missing
                    ]
                )
        to_alter = [t for t in topics if t not in missing and t[2]]
        if to_alter:
            await admin.alter_configs(
                [
                    ConfigResource(ConfigResourceType.TOPIC, name, configs=dict(config))
                    for name, _, config in to_alter
                ]
            )
        return [name for name, _, _ in missing]
    finally:
        await admin.close()


async def topics_led(bootstrap: str, names: Sequence[str], timeout_s: float = 60.0) -> None:
    """Wait until the broker's metadata shows every partition of `names` with a leader.

    A consumer that fetches metadata while a fresh topic has no leader yet takes it for a
    topic of 0 partitions until its next refresh (minutes): Faust then refuses every write
    to a table whose changelog it is (`PartitionsMismatch`), which rejected a valid command
    in CI. So a worker starts consuming only once its topics are led.
    """
    deadline = time.monotonic() + timeout_s
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        while True:
            cluster = await client.fetch_all_metadata()
            unled = [n for n in names if not _led(cluster, n)]
            if not unled:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics without a leader after {timeout_s:.0f}s: {unled}")
            await asyncio.sleep(0.2)
    finally:
        await client.close()


def _led(cluster: ClusterMetadata, name: str) -> bool:
    partitions = cluster.partitions_for_topic(name)
    if not partitions:
        return False
    return all(
        (leader := cluster.leader_for_partition(TopicPartition(name, p))) is not None
        and leader >= 0
        for p in partitions
    )


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


async def group_settled(bootstrap: str, group: str, members: int, timeout_s: float) -> float:
    """Wait until consumer group `group` is Stable with `members` members, and stays so for
    a few seconds (Faust joins in more than one rebalance); returns the seconds waited.
    Benches start timing only then, so a rebalance is not part of what they measure."""
    quiet_s = 3.0
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        stable_since: float | None = None
        while True:
            [answer] = await admin.describe_consumer_groups([group])
            [described] = answer.to_object()["groups"]
            now = loop.time()
            if described["state"] == "Stable" and len(described["members"]) == members:
                stable_since = stable_since if stable_since is not None else now
                if now - stable_since >= quiet_s:
                    return now - start
            else:
                stable_since = None
            if now - start > timeout_s:
                raise TimeoutError(
                    f"group {group} not stable with {members} members after {timeout_s:.0f}s "
                    f"({described['state']}, {len(described['members'])} members)"
                )
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
