"""Reading the decisions topic over a time window, in log order (what-if replay, analysts).

The topic is keyed by conversation id, so a conversation's decisions sit in one partition in
the order they were served; each partition is read from the first offset at or after
``since`` (Kafka's time index) up to its end offset when the read began.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts.codec import DecodeError, decode_event
from contracts.events import DecisionMade
from infra.settings import Settings
from streams.topics import DECISIONS


async def read_decisions(
    settings: Settings, since: datetime, until: datetime | None = None
) -> AsyncIterator[DecisionMade]:
    """Every ``DecisionMade`` logged in ``[since, until)``, partition by partition.

    Undecodable records are skipped (the projector records them as projection errors).
    """
    topic = settings.topic(DECISIONS.name)
    # Subscribing without a group assigns every partition (and loads the topic's metadata).
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 30
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no partitions of {topic} assigned")
            await asyncio.sleep(0.05)
        tps = sorted(consumer.assignment(), key=lambda tp: tp.partition)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.offsets_for_times({tp: _ms(since) for tp in tps})
        until_ms = _ms(until) if until is not None else None
        for tp in tps:
            found = starts.get(tp)
            start = found.offset if found is not None else ends[tp]
            if start >= ends[tp]:
                continue
            consumer.seek(tp, start)
            async for event in _partition(consumer, tp, ends[tp], until_ms):
                yield event
    finally:
        await consumer.stop()


async def _partition(
    consumer: AIOKafkaConsumer, tp: TopicPartition, end: int, until_ms: int | None
) -> AsyncIterator[DecisionMade]:
    others = [p for p in consumer.assignment() if p != tp]
    consumer.pause(*others)
    try:
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=5000)
            for record in batch.get(tp, []):
                if record.offset >= end:
                    return
                if until_ms is not None and record.timestamp >= until_ms:
                    continue  # not `return`: replicas' clocks may interleave timestamps
                if record.value is None:
                    continue
                try:
                    event = decode_event(record.value)
                except DecodeError:
                    continue
                if isinstance(event, DecisionMade):
                    yield event
    finally:
        consumer.resume(*others)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
