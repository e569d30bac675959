"""The carry history: every model's latest measured record, from the whole log.

The aggregator of each run (whichever worker owns the run's partition) writes a model's
record to the compacted `model-history` topic and waits for the broker's ack before it
sends RunCompleted. The worker deciding StartRun reads that one-partition topic *in full*
and catches up to its end offset before each decision, so its carry decisions see every
run's records whichever worker measured them, and a run started after another's
RunCompleted always finds that run's records.

Why not a Faust GlobalTable: a reader cannot wait until it is caught up (no read-your-
writes), and multi-worker global tables have open reports of missing updates
(robinhood/faust#716, #541). A plain consumer that reads to the end offset is exact.
"""

from __future__ import annotations

import logging

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts.command_decider import ModelRecord
from infra.settings import Settings
from streams.topics import MODEL_HISTORY

log = logging.getLogger("provenroute.worker")


class ModelHistory:
    """A catch-up reader of the `model-history` topic; start lazily on the caller's loop."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic(MODEL_HISTORY.name)
        self.bootstrap = settings.kafka_bootstrap
        self._consumer: AIOKafkaConsumer | None = None
        self._tps: list[TopicPartition] = []
        self._records: dict[str, ModelRecord] = {}

    async def _start(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        await consumer.topics()  # fetches the cluster's metadata
        parts = consumer.partitions_for_topic(self.topic) or {0}
        self._tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        consumer.assign(self._tps)
        await consumer.seek_to_beginning(*self._tps)
        self._consumer = consumer
        return consumer

    async def current(self) -> dict[str, ModelRecord]:
        """Every record written before this call (reads up to the end offsets first)."""
        consumer = self._consumer or await self._start()
        end = await consumer.end_offsets(self._tps)
        while not await self._reached(consumer, end):
            batch = await consumer.getmany(*self._tps, timeout_ms=500)
            for msgs in batch.values():
                for m in msgs:
                    self._apply(m.key, m.value)
        return dict(self._records)

    async def _reached(self, consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
        for tp in self._tps:
            if await consumer.position(tp) < end[tp]:
                return False
        return True

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        name = key.decode()
        if value is None:
            self._records.pop(name, None)
            return
        try:
            self._records[name] = ModelRecord.model_validate(orjson.loads(value))
        except Exception:  # a bad record must not stop every later StartRun
            log.exception("unreadable model-history record %s skipped", name)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
