"""The projector: folds the `events` and `decisions` topics into PostgreSQL.

One active projector per schema, any number of standbys waiting on a Postgres advisory
lock to take over (`Projector._take_over`). One aiokafka consumer (manual assignment, no
consumer group: positions live in Postgres), `getmany` batches, and per batch ONE
transaction holding the batch's rows and the `projection_offsets` of its partitions.
Inside that transaction the stored offsets are read `FOR UPDATE` first: if they are not
where this projector left them (a schema swap, a second projector), the batch is dropped
and the consumer re-seeks to the stored offsets.

Messages below the stored offset are skipped; undecodable or unknown messages still
advance it (unknown types are ignored, invalid payloads land in `projection_errors`).
A batch that violates a constraint is re-applied event by event under savepoints so only
the offending events go to `projection_errors`. A lost database connection is retried
with exponential backoff (tenacity) and the projector resumes from the stored offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
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

from infra.settings import Settings
from projections.bulk_writer import BULK_MARKER
from projections.db import aconnect, check_schema
from projections.migrate import amigrate
from projections.stream import (
    Batch,
    Item,
    LogFolder,
    ProjectorRefused,
    ProjectorStats,
    assign_partitions,
    is_set,
    new_consumer,
    parse_ts,
)
from projections.writer import group_rows, setup_temp_tables, write_rows
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

__all__ = ["Projector", "ProjectorRefused", "ProjectorStats", "project_once", "run_projector"]

BeforeCommit = Callable[[Batch], Awaitable[None]]


class _Diverged(Exception):
    pass


class Projector:
    """The live projector: follows the log (or drains it) into a schema, batch by batch."""

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
        batch_max: int = 5000,
        topics: tuple[str, ...] = (EVENTS.name, DECISIONS.name),
        before_commit: BeforeCommit | None = None,
        on_progress: Callable[[ProjectorStats], None] | None = None,
        standby: bool | None = None,
        standby_poll_s: float = 0.5,
    ) -> None:
        self.settings = settings
        self.schema = check_schema(schema or settings.db_schema)
        self.drain = drain or until is not None
        self.standby = not self.drain if standby is None else standby
        """Project only while holding the schema's projector lock, else stand by for it
        (default for a projector that follows the log; a drain projects right away)."""
        self.standby_poll_s = standby_poll_s
        self.notify = notify
        self.migrate = migrate
        self.fast = fast
        """Fold the high-volume events without pydantic validation (trusted replays)."""
        self.batch_max = batch_max
        self.topics = tuple(settings.topic(t) for t in topics)
        self.before_commit = before_commit
        self.on_progress = on_progress
        self.stats = ProjectorStats()
        self.folder = LogFolder(
            self.stats, until=parse_ts(until) if isinstance(until, str) else until, fast=fast
        )
        self.positions: dict[TopicPartition, int] = {}
        """Next offset per partition as committed in Postgres."""
        self.end: dict[TopicPartition, int] = {}
        self.total_to_drain: int | None = None

    # ---- lifecycle -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> ProjectorStats:
        if self.migrate:
            await self._retrying(lambda: amigrate(self.settings.database_url, self.schema), stop)
        consumer = new_consumer(self.settings)
        await consumer.start()
        try:
            tps = await assign_partitions(consumer, self.topics)
            if self.drain:
                self.end = await consumer.end_offsets(tps)
            while not is_set(stop):
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
            self.stats.record_positions(self.positions)
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
                if is_set(stop):
                    return None
                return await fn()
        return None

    async def _connect(self) -> psycopg.AsyncConnection:
        # The pid in the name tells an operator (and the standby test) which process is active.
        app = f"provenroute-projector:{os.getpid()}"
        conn = await aconnect(self.settings.database_url, self.schema, app=app)
        # No server-side prepared statements: names must re-resolve after a schema swap.
        conn.prepare_threshold = None
        if self.fast:
            # Replays need not wait for each WAL flush: rows and offsets share a transaction,
            # so a crash loses a tail of whole batches, which the next run re-projects.
            await conn.execute("set synchronous_commit = off")
            await conn.commit()
        return conn

    async def _load_positions(
        self, conn: psycopg.AsyncConnection, consumer: AIOKafkaConsumer, tps: list[TopicPartition]
    ) -> None:
        cur = await conn.execute("select topic, partition, next_offset from projection_offsets")
        stored = {TopicPartition(t, p): o for t, p, o in await cur.fetchall()}
        await conn.rollback()
        self.positions = {tp: stored.get(tp, 0) for tp in tps}
        self.folder.folded = dict(self.positions)
        self.folder.cut.clear()  # a cut found by an uncommitted batch must be found again
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

    def _finished(self, tps: list[TopicPartition]) -> bool:
        return self.drain and self.folder.finished(tps, self.end)

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
        if self.standby:
            consumer.pause(*tps)  # no prefetching while standing by
            if not await self._take_over(conn, stop):
                return
            consumer.resume(*tps)
        await self._load_positions(conn, consumer, tps)
        # Pipelined by one batch: Postgres commits batch N while this process decodes N+1.
        # `folder.folded` runs ahead of `positions` (committed); a failed commit discards the
        # batch folded behind it and re-seeks to the stored offsets.
        pending: asyncio.Task[Batch] | None = None
        try:
            while not is_set(stop):
                if self._finished(tps):
                    if pending is None:
                        break
                    task, pending = pending, None
                    await self._settle(task, conn, consumer, tps)
                    continue
                data = await consumer.getmany(
                    *self.folder.active(tps), timeout_ms=200, max_records=self.batch_max
                )
                batch = self.folder.fold(data) if data else None
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

    async def _take_over(self, conn: psycopg.AsyncConnection, stop: asyncio.Event | None) -> bool:
        """Wait until this session holds the schema's projector lock; False if stopped first.

        A session-level advisory lock on the connection that writes: Postgres releases it the
        moment that connection ends (a killed process, a lost network), and a standby polling
        here takes over within `standby_poll_s`. If two projectors ever overlapped (a
        half-open connection not yet noticed), the offsets read FOR UPDATE in every commit
        still let only one of them advance.
        """
        announced = False
        while not is_set(stop):
            cur = await conn.execute(
                "select pg_try_advisory_lock(hashtextextended(%s, 0))",
                (projector_lock_name(self.schema),),
            )
            row = await cur.fetchone()
            await conn.commit()
            if row is not None and row[0]:
                self.stats.took_over = True
                log.info("projector %d is active on schema %s", os.getpid(), self.schema)
                return True
            if not announced:
                log.info("another projector is active on %s; standing by", self.schema)
                announced = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_wait(stop), self.standby_poll_s)
        return False

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
            failed: list[Item] = []
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
        failed: list[Item],
    ) -> None:
        async with conn.cursor() as cur:
            if failed:
                await cur.executemany(
                    "insert into projection_errors"
                    ' (topic, partition, "offset", event_type, reason, raw_excerpt)'
                    " values (%s, %s, %s, %s, %s, %s) on conflict do nothing",
                    [it.error_row() for it in failed],
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


def projector_lock_name(schema: str) -> str:
    """The advisory lock whose holder is the active projector of `schema`."""
    return f"provenroute.projector.{schema}"


async def _wait(stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.Event().wait()
    else:
        await stop.wait()


async def run_projector(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    until: str | None = None,
    schema: str | None = None,
    drain: bool = False,
    notify: bool = True,
    fast: bool = False,
    batch_max: int = 5000,
    on_progress: Callable[[ProjectorStats], None] | None = None,
    before_commit: BeforeCommit | None = None,
) -> ProjectorStats:
    """Project `events` and `decisions` into `schema` (default: settings.db_schema).

    Follows the log until `stop` is set. With `drain` (or `until`) it returns once every
    partition reached the end offsets seen at start; with `until` each partition stops at
    its first event later than that timestamp (the stored offset then points at it).
    Migrations are applied first. `fast` folds CaseGraded/DecisionMade without pydantic
    validation (for replays of a log the worker validated when writing it). The bulk load
    of a fresh schema is `projections.bulk`.
    """
    projector = Projector(
        settings,
        schema,
        until=until,
        drain=drain,
        notify=notify,
        fast=fast,
        batch_max=batch_max,
        on_progress=on_progress,
        before_commit=before_commit,
    )
    return await projector.run(stop)


async def project_once(settings: Settings, schema: str | None = None) -> int:
    """Drain both topics to their current end into `schema`; returns the events applied."""
    stats = await run_projector(settings, schema=schema, drain=True)
    return stats.events_applied
