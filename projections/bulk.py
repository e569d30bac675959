"""The bulk loader: drains the log into a fresh schema prepared by `projections.replay`.

The same `LogFolder` as the live projector (decoding, `until`, errors, ignored types), then
`BulkClaims` (the live writer's dedup and foreign-key rules, in memory) and COPY in a
thread, so Postgres loads batch N while this process decodes N+1. Raises BulkUnsupported or
psycopg.Error when it cannot give the live result; the replay then goes through the
transactional projector instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.settings import Settings
from projections.bulk_writer import BulkLoader, Deferred
from projections.db import check_schema
from projections.stream import (
    Batch,
    ErrorRow,
    LogFolder,
    ProjectorRefused,
    ProjectorStats,
    assign_partitions,
    is_set,
    new_consumer,
    parse_ts,
)
from streams.topics import DECISIONS, EVENTS

BULK_BATCH = 10_000
"""Records per `getmany` in a bulk replay (the live projector's batches are smaller)."""


@dataclass(frozen=True)
class BulkShard:
    """One process's part of a parallel bulk replay."""

    partitions: tuple[tuple[str, int], ...]
    deferred: list[Deferred]
    """The constraints the opener dropped (foreign keys to check in memory)."""


class BulkReplayer:
    """Loads every partition (or one shard's) of both topics from offset 0 into `schema`."""

    def __init__(
        self,
        settings: Settings,
        schema: str,
        *,
        until: str | datetime | None = None,
        fast: bool = True,
        shard: BulkShard | None = None,
        batch_max: int = BULK_BATCH,
        on_progress: Callable[[ProjectorStats], None] | None = None,
    ) -> None:
        self.settings = settings
        self.schema = check_schema(schema)
        self.shard = shard
        """Load only these partitions, beside other processes (see `replay`)."""
        self.batch_max = batch_max
        self.on_progress = on_progress
        self.topics = (settings.topic(EVENTS.name), settings.topic(DECISIONS.name))
        self.stats = ProjectorStats()
        self.folder = LogFolder(
            self.stats, until=parse_ts(until) if isinstance(until, str) else until, fast=fast
        )
        self.errors: list[ErrorRow] = []
        """A shard's projection_errors rows (the opener writes them)."""
        self.copied: dict[str, int] = {}
        """Rows copied per table (the opener's restore starts with the biggest)."""

    async def run(self, stop: asyncio.Event | None = None) -> ProjectorStats:
        # Small fetches: a loader folds far slower than Kafka sends, so a big read-ahead
        # only costs memory (the per-process RSS budget is 250 MB) and CPU (measured: 4 MB
        # fetches take a quarter less CPU per record than 64 MB ones).
        consumer = new_consumer(self.settings, fetch_mb=4)
        await consumer.start()
        try:
            only = self.shard.partitions if self.shard is not None else None
            tps = await assign_partitions(consumer, self.topics, only)
            end = await consumer.end_offsets(tps)
            await self._load(consumer, tps, end, stop)
        finally:
            await consumer.stop()
            self.stats.record_positions(self.folder.folded)
        return self.stats

    async def _load(
        self,
        consumer: AIOKafkaConsumer,
        tps: list[TopicPartition],
        end: dict[TopicPartition, int],
        stop: asyncio.Event | None,
    ) -> None:
        loader = BulkLoader(self.settings.database_url, self.schema)
        self.copied = loader.copied
        if self.shard is not None:
            claims = await asyncio.to_thread(loader.attach, self.shard.deferred)
        else:
            claims = await asyncio.to_thread(loader.open)
        folder = self.folder
        folder.folded = {tp: 0 for tp in tps}
        for tp in tps:
            await consumer.seek_to_beginning(tp)
        self.stats.to_drain = sum(end.get(tp, 0) for tp in tps)
        pending: asyncio.Future[None] | None = None
        grouped: dict[str, list[tuple[Any, ...]]] = {}  # a share of empty partitions has none
        done: list[Batch] = []
        # The claimed keys pile up (a million tuples): automatic collections would sweep
        # them again and again (as much CPU as the whole load); even one young-generation
        # pass per batch costs a third of it. The load makes little cyclic garbage (aiokafka
        # futures): collect it once, at the end.
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            while not folder.finished(tps, end):
                if is_set(stop):
                    raise ProjectorRefused("stopped before the bulk replay finished")
                data = await consumer.getmany(
                    *folder.active(tps), timeout_ms=200, max_records=self.batch_max
                )
                if not data:
                    continue
                batch = folder.fold(data)
                grouped = claims.claim_shaped(
                    (it.rows, True) if it.fast else (loader.typed(it.rows), False)
                    for it in batch.items
                    if it.error is None
                )
                failed = [it.error_row() for it in batch.items if it.error is not None]
                self.errors += failed
                self.stats.failed += len(failed)
                if pending is not None:
                    await pending
                    self._progress(done.pop())
                pending = asyncio.ensure_future(asyncio.to_thread(loader.copy, grouped))
                done.append(batch)
            if pending is not None:
                await pending
                self._progress(done.pop())
            offsets = sorted(
                (tp.topic, tp.partition, off) for tp, off in folder.folded.items() if off > 0
            )
            # The claimed keys go now, by reference counting: a collection that met them
            # (below) would walk a million tuples for nothing.
            del claims, grouped
            if self.shard is not None:
                await asyncio.to_thread(loader.commit_rows)
            else:
                self.stats.load_s = time.monotonic() - self.stats.started
                await asyncio.to_thread(loader.finish, offsets, self.errors)
                self.stats.restore_s = time.monotonic() - self.stats.started - self.stats.load_s
        finally:
            if pending is not None and not pending.done():
                with contextlib.suppress(BaseException):
                    await pending
            await asyncio.to_thread(loader.close)
            if gc_was_on:
                gc.enable()
            gc.collect()

    def _progress(self, batch: Batch) -> None:
        self.stats.batches += 1
        self.stats.events_applied += batch.applied
        self.stats.ignored += batch.ignored
        if self.on_progress is not None:
            self.stats.elapsed_s = time.monotonic() - self.stats.started
            self.on_progress(self.stats)
