"""On real Kafka: a partition never committed is rewound to its beginning on assignment.

Faust drops messages fetched around a rebalance (for a partition paused while its tables
recover, or from an older generation) and relies on seeking back to the committed offset.
aiokafka seeks only where an offset > 0 was committed, so on a fresh partition the dropped
messages were gone (a run's `RunStarted`, in the two-worker e2e test). The worker's consumer
seeks such partitions to their beginning instead (`streams.commit_guard`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from infra.settings import Settings
from streams.commit_guard import seek_to_committed_or_start
from streams.kafka_admin import ensure_named_topics

# The consumer is built in the fixture: the tests run on the fixtures' (session) loop.
pytestmark = [pytest.mark.timeout(180), pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
async def consumed(
    kafka_prefix: str, base_settings: Settings
) -> AsyncIterator[tuple[AIOKafkaConsumer, TopicPartition, TopicPartition]]:
    """A group consumer that has read 3 messages on each of two fresh one-partition topics,
    committed nothing, and sits at offset 3 on both."""
    bootstrap = base_settings.kafka_bootstrap
    guarded, other = f"{kafka_prefix}guarded", f"{kafka_prefix}other"
    await ensure_named_topics(bootstrap, [(guarded, 1, {}), (other, 1, {})])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for topic in (guarded, other):
            for i in range(3):
                await producer.send_and_wait(topic, f"m{i}".encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        guarded,
        other,
        bootstrap_servers=bootstrap,
        group_id=f"{kafka_prefix}group-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = (TopicPartition(guarded, 0), TopicPartition(other, 0))
        read: dict[TopicPartition, int] = dict.fromkeys(tps, 0)
        while any(n < 3 for n in read.values()):
            for tp, records in (await consumer.getmany(timeout_ms=10_000)).items():
                read[tp] += len(records)
        assert [await consumer.position(tp) for tp in tps] == [3, 3]
        yield consumer, tps[0], tps[1]
    finally:
        await consumer.stop()


async def test_aiokafka_leaves_an_uncommitted_partition_where_it_was_read_to(
    consumed: tuple[AIOKafkaConsumer, TopicPartition, TopicPartition],
) -> None:
    # The premise: what a rebalance dropped after reading it is not read again.
    consumer, guarded, _ = consumed
    committed = await consumer.seek_to_committed()
    assert committed[guarded] is None
    assert await consumer.position(guarded) == 3


async def test_an_uncommitted_guarded_partition_is_read_again_from_its_beginning(
    consumed: tuple[AIOKafkaConsumer, TopicPartition, TopicPartition],
) -> None:
    consumer, guarded, other = consumed
    await seek_to_committed_or_start(consumer, frozenset({guarded.topic}))
    assert await consumer.position(guarded) == 0
    assert await consumer.position(other) == 3  # not a guarded topic: left as it was
    again = await consumer.getmany(guarded, timeout_ms=10_000)
    assert [r.value for r in again[guarded]] == [b"m0", b"m1", b"m2"]


async def test_a_committed_guarded_partition_goes_back_to_its_commit(
    consumed: tuple[AIOKafkaConsumer, TopicPartition, TopicPartition],
) -> None:
    consumer, guarded, _ = consumed
    await consumer.commit({guarded: OffsetAndMetadata(2, "")})
    committed = await seek_to_committed_or_start(consumer, frozenset({guarded.topic}))
    assert committed[guarded] == 2
    assert await consumer.position(guarded) == 2
