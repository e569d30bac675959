"""The projector: folds the `events` and `decisions` topics into PostgreSQL.

One aiokafka consumer (manual assignment, no consumer group: positions live in Postgres),
`getmany` batches, and per batch ONE transaction holding the batch's rows and the
`projection_offsets` of its partitions. Inside that transaction the stored offsets are
read `FOR UPDATE` first: if they are not where this projector left them (a schema swap, a
second projector), the batch is dropped and the consumer re-seeks to the stored offsets.

Messages below the stored offset are skipped; undecodable or unknown messages still
advance it (unknown types are ignored, invalid payloads land in `projection_errors`).
A batch that violates a constraint is re-applied event by event under savepoints so only
the offending events go to `projection_errors`. A lost database connection is retried
with exponential backoff (tenacity) and the projector resumes from the stored offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from psycopg import errors as pg_errors
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_never,
    wait_exponential,
)

from contracts.codec import DecodeError, decode_event
from contracts.events import EVENT_CLASSES
from infra.settings import Settings
from projections.db import aconnect, check_schema
from projections.fold import FAST_FOLDERS, Row, fold
from projections.migrate import amigrate
from projections.writer import (
    BULK_MARKER,
    BulkLoader,
    Deferred,
    group_rows,
    setup_temp_tables,
    write_rows,
)
from streams.topics import (
    CHANNEL_CLASSIFIER_OVERRIDE,
    CHANNEL_CLASSIFIER_WINNER,
    CHANNEL_ROUTING_TABLE,
    DECISIONS,
    EVENTS,
)

log = logging.getLogger("provenroute.projector")

TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, OSError)
"""Errors that mean "the database went away": reconnect and resume from stored offsets."""

RAW_EXCERPT = 500


def parse_ts(value: str) -> datetime:
    """An ISO-8601 timestamp; a naive one is taken as UTC."""
    from datetime import UTC

    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass
class ProjectorStats:
    events_applied: int = 0
    """Events decoded, folded and committed (duplicates of projected facts included)."""
    ignored: int = 0
    """Messages of unknown types or tombstones: skipped, offset advanced."""
    failed: int = 0
    """Invalid messages or constraint violations recorded in projection_errors."""
    skipped_below_offset: int = 0
    batches: int = 0
    reconnects: int = 0
    diverged: int = 0
    """Batches dropped because the stored offsets moved under the projector."""
    workers: int = 1
    """Processes that loaded (a parallel bulk replay)."""
    to_drain: int | None = None
    """Draining: messages between the start positions and the end offsets seen at start."""
    started: float = field(default_factory=time.monotonic)
    elapsed_s: float = 0.0
    positions: dict[str, dict[int, int]] = field(default_factory=dict)
    """Next offset per topic and partition when the projector stopped."""

    @property
    def events_per_s(self) -> float:
        return self.events_applied / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class _Item:
    tp: TopicPartition
    offset: int
    event_type: str | None
    rows: list[Row]
    error: str | None = None
    raw: bytes | None = None


@dataclass
class Batch:
    items: list[_Item]
    start: dict[TopicPartition, int]
    """Next offset per partition before this batch (what Postgres must hold)."""
    end: dict[TopicPartition, int]
    """Next offset per partition after it."""
    applied: int = 0
    ignored: int = 0


BeforeCommit = Callable[[Batch], Awaitable[None]]


class _Diverged(Exception):
    pass


@dataclass(frozen=True)
class BulkShard:
    """One process's part of a parallel bulk replay."""

    partitions: tuple[tuple[str, int], ...]
    deferred: list[Deferred]
    """The constraints the opener dropped (foreign keys to check in memory)."""


class ProjectorRefused(RuntimeError):
    """The target schema must not be projected into (an unfinished bulk replay)."""


class Projector:
    def __init__(
        self,
        settings: Settings,
        schema: str | None = None,
        *,
        until: str | datetime | None = None,
        drain: bool = False,
        notify: bool = True,
        migrate: bool = True,
        fast: bool = False,
        bulk: bool = False,
        shard: BulkShard | None = None,
        batch_max: int = 5000,
        topics: tuple[str, ...] = (EVENTS.name, DECISIONS.name),
        before_commit: BeforeCommit | None = None,
        on_progress: Callable[[ProjectorStats], None] | None = None,
    ) -> None:
        self.settings = settings
        self.schema = check_schema(schema or settings.db_schema)
        self.until = parse_ts(until) if isinstance(until, str) else until
        self.drain = drain or until is not None
        self.notify = notify
        self.migrate = migrate
        self.fast = fast
        """Fold the high-volume events without pydantic validation (trusted replays)."""
        self.bulk = bulk
        """Load a fresh schema prepared by `replay` with COPY and constraints off (see
        `projections.writer.BulkLoader`); needs `drain`."""
        self.shard = shard
        """Bulk: load only these partitions, beside other processes (see `replay`)."""
        self.bulk_errors: list[tuple[str, int, int, str | None, str, str | None]] = []
        """A shard's projection_errors rows (the opener writes them)."""
        self.batch_max = batch_max
        self.topics = tuple(settings.topic(t) for t in topics)
        self.before_commit = before_commit
        self.on_progress = on_progress
        self.stats = ProjectorStats()
        self.positions: dict[TopicPartition, int] = {}
        """Next offset per partition as committed in Postgres."""
        self.folded: dict[TopicPartition, int] = {}
        """Next offset per partition as folded (ahead of `positions` by the pending batch)."""
        self.end: dict[TopicPartition, int] = {}
        self.cut: set[TopicPartition] = set()
        """Partitions stopped by `until` (their next event is later than it)."""
        self.total_to_drain: int | None = None

    # ---- lifecycle -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> ProjectorStats:
        if self.migrate:
            await self._retrying(lambda: amigrate(self.settings.database_url, self.schema), stop)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        try:
            tps = await self._assign(consumer)
            if self.drain:
                self.end = await consumer.end_offsets(tps)
            if self.bulk:
                await self._bulk(consumer, tps, stop)
            while not self.bulk and not _is_set(stop):
                conn = await self._retrying(self._connect, stop)
                if conn is None:
                    break
                try:
                    async with conn:
                        await self._session(conn, consumer, tps, stop)
                    break
                except TRANSIENT as e:
                    self.stats.reconnects += 1
                    log.warning("projector lost the database (%s); resuming from stored offsets", e)
        finally:
            await consumer.stop()
            self.stats.elapsed_s = time.monotonic() - self.stats.started
            self.stats.positions = {}
            for tp, off in self.positions.items():
                self.stats.positions.setdefault(tp.topic, {})[tp.partition] = off
        return self.stats

    async def _retrying(self, fn: Callable[[], Awaitable[Any]], stop: asyncio.Event | None) -> Any:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(TRANSIENT),
            wait=wait_exponential(multiplier=0.2, max=5.0),
            stop=stop_never if stop is None else (lambda _rs: stop.is_set()),
            before_sleep=lambda rs: log.warning(
                "database unavailable (attempt %d): %s",
                rs.attempt_number,
                rs.outcome.exception() if rs.outcome else None,
            ),
            reraise=True,
        ):
            with attempt:
                if _is_set(stop):
                    return None
                return await fn()
        return None

    async def _connect(self) -> psycopg.AsyncConnection:
        conn = await aconnect(self.settings.database_url, self.schema, app="provenroute-projector")
        # No server-side prepared statements: names must re-resolve after a schema swap.
        conn.prepare_threshold = None
        if self.fast:
            # Replays need not wait for each WAL flush: rows and offsets share a transaction,
            # so a crash loses a tail of whole batches, which the next run re-projects.
            await conn.execute("set synchronous_commit = off")
            await conn.commit()
        return conn

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        # `consumer.topics()` fetches metadata but leaves the consumer's own cluster view
        # as it was (aiokafka 0.14), so partitions_for_topic would answer None: read the
        # freshly fetched cluster instead.
        cluster = await consumer._client.fetch_all_metadata()
        tps: list[TopicPartition] = []
        for topic in self.topics:
            parts = cluster.partitions_for_topic(topic)
            if not parts:
                log.warning("topic %s does not exist; not projecting it", topic)
                continue
            tps += [TopicPartition(topic, p) for p in sorted(parts)]
        if self.shard is not None:
            mine = set(self.shard.partitions)
            tps = [tp for tp in tps if (tp.topic, tp.partition) in mine]
        consumer.assign(tps)
        return tps

    async def _load_positions(
        self, conn: psycopg.AsyncConnection, consumer: AIOKafkaConsumer, tps: list[TopicPartition]
    ) -> None:
        cur = await conn.execute("select topic, partition, next_offset from projection_offsets")
        stored = {TopicPartition(t, p): o for t, p, o in await cur.fetchall()}
        await conn.rollback()
        self.positions = {tp: stored.get(tp, 0) for tp in tps}
        self.folded = dict(self.positions)
        self.cut.clear()  # a cut found by an uncommitted batch must be found again
        for tp in tps:
            if self.positions[tp] == 0:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, self.positions[tp])
        if self.drain and self.total_to_drain is None:
            self.total_to_drain = sum(
                max(0, self.end.get(tp, 0) - self.positions[tp]) for tp in tps
            )
            self.stats.to_drain = self.total_to_drain

    def _finished(self, tps: list[TopicPartition], positions: dict[TopicPartition, int]) -> bool:
        if not self.drain:
            return False
        return all(tp in self.cut or positions[tp] >= self.end.get(tp, 0) for tp in tps)

    async def _session(
        self,
        conn: psycopg.AsyncConnection,
        consumer: AIOKafkaConsumer,
        tps: list[TopicPartition],
        stop: asyncio.Event | None,
    ) -> None:
        await setup_temp_tables(conn)
        cur = await conn.execute("select to_regclass(%s)", (BULK_MARKER,))
        marked = await cur.fetchone()
        await conn.rollback()
        if marked is not None and marked[0] is not None:
            raise ProjectorRefused(
                f"schema {self.schema} holds an unfinished bulk replay; replay it again"
            )
        await self._load_positions(conn, consumer, tps)
        # Pipelined by one batch: Postgres commits batch N while this process decodes N+1.
        # `folded` runs ahead of `positions` (committed); a failed commit discards the batch
        # folded behind it and re-seeks to the stored offsets.
        pending: asyncio.Task[Batch] | None = None
        try:
            while not _is_set(stop):
                if self._finished(tps, self.folded):
                    if pending is None:
                        break
                    task, pending = pending, None
                    await self._settle(task, conn, consumer, tps)
                    continue
                active = [tp for tp in tps if tp not in self.cut]
                data = await consumer.getmany(*active, timeout_ms=200, max_records=self.batch_max)
                batch = self._fold(data) if data else None
                if pending is not None and (batch is not None or pending.done()):
                    task, pending = pending, None
                    if not await self._settle(task, conn, consumer, tps):
                        continue  # diverged: positions reloaded, this batch is stale
                if batch is not None and batch.end != batch.start:
                    pending = asyncio.create_task(self._commit(conn, batch))
            if pending is not None:  # stopped: let the batch in flight commit
                task, pending = pending, None
                await self._settle(task, conn, consumer, tps)
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending

    async def _settle(
        self,
        task: asyncio.Task[Batch],
        conn: psycopg.AsyncConnection,
        consumer: AIOKafkaConsumer,
        tps: list[TopicPartition],
    ) -> bool:
        """Wait for a commit; account for it, or on divergence reload. True if it committed."""
        try:
            batch = await task
        except _Diverged:
            self.stats.diverged += 1
            log.warning("stored offsets moved under the projector; re-seeking")
            await self._load_positions(conn, consumer, tps)
            return False
        self.positions.update(batch.end)
        self.stats.batches += 1
        self.stats.events_applied += batch.applied
        self.stats.ignored += batch.ignored
        if self.on_progress is not None:
            self.stats.elapsed_s = time.monotonic() - self.stats.started
            self.on_progress(self.stats)
        return True

    # ---- bulk load (replay into a fresh schema) ---------------------------------------

    async def _bulk(
        self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], stop: asyncio.Event | None
    ) -> None:
        """Drain the log into a fresh schema: fold and claim here, COPY in a thread.

        The same `_fold` as the live path (decoding, `until`, errors, ignored types), then
        `BulkClaims` (the live writer's dedup and foreign-key rules, in memory) and COPY.
        Raises BulkUnsupported or psycopg.Error when it cannot give the live result; the
        caller then replays through the transactional path.
        """
        if not self.drain:
            raise ValueError("bulk loading drains the log: pass drain=True")
        loader = BulkLoader(self.settings.database_url, self.schema)
        if self.shard is not None:
            claims = await asyncio.to_thread(loader.attach, self.shard.deferred)
        else:
            claims = await asyncio.to_thread(loader.open)
        self.positions = {tp: 0 for tp in tps}
        self.folded = dict(self.positions)
        for tp in tps:
            await consumer.seek_to_beginning(tp)
        self.total_to_drain = sum(self.end.get(tp, 0) for tp in tps)
        self.stats.to_drain = self.total_to_drain
        errors: list[tuple[str, int, int, str | None, str, str | None]] = []
        pending: asyncio.Future[None] | None = None
        done: list[Batch] = []
        # The claimed keys pile up (a million tuples): automatic collections would sweep
        # them again and again (as much CPU as the whole load); even one young-generation
        # pass per batch costs a third of it. The load makes little cyclic garbage (aiokafka
        # futures): collect it once, at the end.
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            while not self._finished(tps, self.folded):
                if _is_set(stop):
                    raise ProjectorRefused("stopped before the bulk replay finished")
                active = [tp for tp in tps if tp not in self.cut]
                data = await consumer.getmany(*active, timeout_ms=200, max_records=self.batch_max)
                if not data:
                    continue
                batch = self._fold(data)
                grouped = claims.claim(it.rows for it in batch.items if it.error is None)
                errors += [
                    (
                        it.tp.topic,
                        it.tp.partition,
                        it.offset,
                        it.event_type,
                        it.error,
                        None if it.raw is None else it.raw[:RAW_EXCERPT].decode("utf-8", "replace"),
                    )
                    for it in batch.items
                    if it.error is not None
                ]
                self.stats.failed += sum(1 for it in batch.items if it.error is not None)
                if pending is not None:
                    await pending
                    self._bulk_progress(done.pop())
                pending = asyncio.ensure_future(asyncio.to_thread(loader.copy, grouped))
                done.append(batch)
            if pending is not None:
                await pending
                self._bulk_progress(done.pop())
            offsets = sorted(
                (tp.topic, tp.partition, off) for tp, off in self.folded.items() if off > 0
            )
            if self.shard is not None:
                await asyncio.to_thread(loader.commit_rows)
                self.bulk_errors = errors
            else:
                await asyncio.to_thread(loader.finish, offsets, errors)
            self.positions = dict(self.folded)
        finally:
            if pending is not None and not pending.done():
                with contextlib.suppress(BaseException):
                    await pending
            await asyncio.to_thread(loader.close)
            if gc_was_on:
                gc.enable()
            gc.collect()

    def _bulk_progress(self, batch: Batch) -> None:
        self.stats.batches += 1
        self.stats.events_applied += batch.applied
        self.stats.ignored += batch.ignored
        if self.on_progress is not None:
            self.stats.elapsed_s = time.monotonic() - self.stats.started
            self.on_progress(self.stats)

    # ---- folding (no IO) -------------------------------------------------------------

    def _decode_fold(self, raw: bytes) -> tuple[str, str | None, list[Row]]:
        """(occurred_at, type, rows) of a message; raises DecodeError."""
        if self.fast:
            try:
                d = orjson.loads(raw)
                fast = FAST_FOLDERS.get((d["type"], d["schema_version"]))
                if fast is not None:
                    return d["occurred_at"], d["type"], fast(d)
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                pass  # the validating decoder says precisely what is wrong
        event = decode_event(raw)
        return event.occurred_at, event.type, fold(event)

    def _fold(self, data: dict[TopicPartition, list[Any]]) -> Batch:
        items: list[_Item] = []
        start: dict[TopicPartition, int] = {}
        end: dict[TopicPartition, int] = {}
        applied = ignored = 0
        until = self.until
        for tp, msgs in data.items():
            if tp in self.cut:
                continue
            pos = self.folded.get(tp, 0)
            start[tp] = end[tp] = pos
            for m in msgs:
                if m.offset < pos:
                    self.stats.skipped_below_offset += 1
                    continue
                raw = m.value
                if raw is None:
                    ignored += 1
                    end[tp] = m.offset + 1
                    continue
                try:
                    occurred_at, type_name, rows = self._decode_fold(raw)
                except DecodeError as e:
                    if until is not None and _later_than(raw, until):
                        self.cut.add(tp)
                        break
                    if e.type_name is not None and e.type_name not in EVENT_CLASSES:
                        ignored += 1
                    else:
                        items.append(_Item(tp, m.offset, e.type_name, [], e.reason, raw))
                    end[tp] = m.offset + 1
                    continue
                if until is not None and parse_ts(occurred_at) > until:
                    self.cut.add(tp)
                    break
                if rows:
                    items.append(_Item(tp, m.offset, type_name, rows))
                    applied += 1
                else:
                    ignored += 1
                end[tp] = m.offset + 1
        self.folded.update(end)
        return Batch(items, start, end, applied, ignored)

    # ---- writing ---------------------------------------------------------------------

    async def _commit(self, conn: psycopg.AsyncConnection, batch: Batch) -> Batch:
        try:
            async with conn.transaction():
                await self._check_offsets(conn, batch)
                inserted = await write_rows(conn, group_rows(it.rows for it in batch.items))
                failed = [it for it in batch.items if it.error is not None]
                await self._finish(conn, batch, inserted, failed)
        except (pg_errors.IntegrityError, pg_errors.DataError) as e:
            log.warning("batch violates a constraint (%s); applying it event by event", e)
            await self._commit_one_by_one(conn, batch)
        return batch

    async def _commit_one_by_one(self, conn: psycopg.AsyncConnection, batch: Batch) -> None:
        async with conn.transaction():
            await self._check_offsets(conn, batch)
            inserted: dict[str, set[Any]] = {}
            failed: list[_Item] = []
            for it in batch.items:
                if it.error is not None:
                    failed.append(it)
                    continue
                try:
                    async with conn.transaction():
                        got = await write_rows(conn, group_rows([it.rows]), clear_staging=True)
                except (pg_errors.IntegrityError, pg_errors.DataError) as e:
                    it.error = f"{type(e).__name__}: {e}"
                    failed.append(it)
                    batch.applied -= 1
                    continue
                for table, keys in got.items():
                    inserted.setdefault(table, set()).update(keys)
            await self._finish(conn, batch, inserted, failed)

    async def _check_offsets(self, conn: psycopg.AsyncConnection, batch: Batch) -> None:
        cur = await conn.execute(
            "select topic, partition, next_offset from projection_offsets for update"
        )
        stored = {TopicPartition(t, p): o for t, p, o in await cur.fetchall()}
        for tp, expected in batch.start.items():
            if stored.get(tp, 0) != expected:
                raise _Diverged

    async def _finish(
        self,
        conn: psycopg.AsyncConnection,
        batch: Batch,
        inserted: dict[str, set[Any]],
        failed: list[_Item],
    ) -> None:
        async with conn.cursor() as cur:
            if failed:
                await cur.executemany(
                    "insert into projection_errors"
                    ' (topic, partition, "offset", event_type, reason, raw_excerpt)'
                    " values (%s, %s, %s, %s, %s, %s) on conflict do nothing",
                    [
                        (
                            it.tp.topic,
                            it.tp.partition,
                            it.offset,
                            it.event_type,
                            it.error,
                            None
                            if it.raw is None
                            else it.raw[:RAW_EXCERPT].decode("utf-8", errors="replace"),
                        )
                        for it in failed
                    ],
                )
                self.stats.failed += len(failed)
                for it in failed:
                    log.warning(
                        "event at %s[%d]@%d not projected: %s",
                        it.tp.topic,
                        it.tp.partition,
                        it.offset,
                        it.error,
                    )
            await cur.executemany(
                "insert into projection_offsets (topic, partition, next_offset)"
                " values (%s, %s, %s) on conflict (topic, partition)"
                " do update set next_offset = excluded.next_offset",
                # Only partitions this batch moved: a partition never advanced has no row,
                # whatever the batching (a replay writes the same rows).
                [
                    (tp.topic, tp.partition, off)
                    for tp, off in batch.end.items()
                    if off != batch.start.get(tp)
                ],
            )
            if self.notify:
                for channel, table in (
                    (CHANNEL_ROUTING_TABLE, "routing_tables"),
                    (CHANNEL_CLASSIFIER_WINNER, "classifier_winners"),
                    (CHANNEL_CLASSIFIER_OVERRIDE, "classifier_overrides"),
                ):
                    for (key,) in sorted(inserted.get(table, ())):
                        payload = orjson.dumps({"schema": self.schema, "version": key}).decode()
                        await cur.execute("select pg_notify(%s, %s)", (channel, payload))
        if self.before_commit is not None:
            await self.before_commit(batch)


def _is_set(stop: asyncio.Event | None) -> bool:
    return stop is not None and stop.is_set()


def _later_than(raw: bytes, until: datetime) -> bool:
    """For messages that do not decode: is their `occurred_at` (if readable) past `until`?"""
    try:
        value = orjson.loads(raw).get("occurred_at")
        return isinstance(value, str) and parse_ts(value) > until
    except (orjson.JSONDecodeError, AttributeError, ValueError):
        return False


async def run_projector(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    until: str | None = None,
    schema: str | None = None,
    drain: bool = False,
    notify: bool = True,
    fast: bool = False,
    bulk: bool = False,
    batch_max: int = 5000,
    on_progress: Callable[[ProjectorStats], None] | None = None,
    before_commit: BeforeCommit | None = None,
) -> ProjectorStats:
    """Project `events` and `decisions` into `schema` (default: settings.db_schema).

    Follows the log until `stop` is set. With `drain` (or `until`) it returns once every
    partition reached the end offsets seen at start; with `until` each partition stops at
    its first event later than that timestamp (the stored offset then points at it).
    Migrations are applied first. `fast` folds CaseGraded/DecisionMade without pydantic
    validation (for replays of a log the worker validated when writing it); `bulk` loads a
    fresh schema prepared by `projections.replay` with COPY (see `Projector._bulk`).
    """
    projector = Projector(
        settings,
        schema,
        until=until,
        drain=drain,
        notify=notify,
        fast=fast,
        bulk=bulk,
        batch_max=batch_max,
        on_progress=on_progress,
        before_commit=before_commit,
    )
    return await projector.run(stop)


async def project_once(settings: Settings, schema: str | None = None) -> int:
    """Drain both topics to their current end into `schema`; returns the events applied."""
    stats = await run_projector(settings, schema=schema, drain=True)
    return stats.events_applied
