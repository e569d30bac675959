"""Replay: rebuild every projection from offset 0 into a fresh schema, optionally swap it in.

The fresh schema gets the migrations, then the projector drains both topics into it (no
NOTIFY: nobody reads it yet). By default it bulk-loads (`projections.bulk`: COPY with the
keys, foreign keys and indexes off, restored and validated at the end); if the log holds
something that path does not reproduce exactly (an orphan event, a row breaking a key), the
schema is made afresh and the replay runs through the live, transactional path instead, so
the result is always the live projector's, row for row.

`--until` stops each partition at its first event later than the timestamp, so the schema
shows the world as it was then. `swap_in` renames schemas in one transaction (`live` ->
`live_pre_<stamp>`, `new` -> `live`), then notifies readers of the live routing table and
classifier winner. The old schema is kept for inspection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import psycopg
from psycopg import sql

from infra.settings import Settings
from projections.bulk import BulkReplayer
from projections.bulk_parallel import FALLBACK, ShardFailed, parallel_bulk_replay, partition_sizes
from projections.bulk_writer import BULK_MARKER
from projections.db import check_schema, connect
from projections.migrate import migrate
from projections.projector import (
    ProjectorStats,
    run_projector,
)
from streams.topics import CHANNEL_CLASSIFIER_WINNER, CHANNEL_ROUTING_TABLE

log = logging.getLogger("provenroute.replay")


class ReplayError(RuntimeError):
    pass


@dataclass
class ReplayResult:
    schema: str
    stats: ProjectorStats
    swapped_out: str | None = None
    """After a swap: the name the previous live schema was renamed to."""
    mode: str = "bulk"
    """"bulk", "transactional", or "transactional (bulk fell back)"."""


def default_schema_name(live: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    return f"{live}_replay_{stamp}"[:63]


def schema_exists(url: str, schema: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("select 1 from pg_namespace where nspname = %s", (schema,)).fetchone()
    return row is not None


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))


def prepare_fresh_schema(settings: Settings, schema: str, *, replace: bool = False) -> None:
    check_schema(schema)
    if schema == settings.db_schema:
        raise ReplayError(f"refusing to replay into the live schema {schema!r}")
    if schema_exists(settings.database_url, schema):
        if not replace:
            raise ReplayError(f"schema {schema!r} exists; pass replace=True (--replace) to drop it")
        drop_schema(settings.database_url, schema)
    migrate(settings.database_url, schema)
    with connect(settings.database_url, schema) as conn:
        conn.execute(sql.SQL("create table {} ()").format(sql.Identifier(BULK_MARKER)))


async def replay(
    settings: Settings,
    *,
    schema: str | None = None,
    until: str | None = None,
    swap: bool = False,
    replace: bool = False,
    fast: bool = True,
    bulk: bool = True,
    workers: int | None = None,
    on_progress: Callable[[ProjectorStats], None] | None = None,
) -> ReplayResult:
    """Rebuild all projections from offset 0 into `schema` (default `<live>_replay_<stamp>`)."""
    target = schema or default_schema_name(settings.db_schema)
    await asyncio.to_thread(prepare_fresh_schema, settings, target, replace=replace)
    mode = "bulk" if bulk else "transactional"
    stats: ProjectorStats | None = None
    if bulk:
        try:
            stats = await bulk_replay(
                settings, target, until=until, fast=fast, workers=workers, on_progress=on_progress
            )
        except FALLBACK as e:
            log.warning("bulk replay not possible (%s); replaying transactionally", e)
            await asyncio.to_thread(prepare_fresh_schema, settings, target, replace=True)
            mode = "transactional (bulk fell back)"
    if stats is None:
        with connect(settings.database_url, target) as conn:
            conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(BULK_MARKER)))
        stats = await run_projector(
            settings,
            schema=target,
            until=until,
            drain=True,
            notify=False,
            fast=fast,
            on_progress=on_progress,
        )
    result = ReplayResult(target, stats, mode=mode)
    if mode == "bulk" and stats.workers > 1:
        result.mode = f"bulk, {stats.workers} loader processes"
    if swap:
        result.swapped_out = await asyncio.to_thread(swap_in, settings, target)
        result.schema = settings.db_schema
    return result


PARALLEL_MIN = 200_000
"""Messages from which a bulk replay splits the partitions over BULK_WORKERS processes."""
BULK_WORKERS = 2


async def bulk_replay(
    settings: Settings,
    schema: str,
    *,
    until: str | None = None,
    fast: bool = True,
    workers: int | None = None,
    on_progress: Callable[[ProjectorStats], None] | None = None,
) -> ProjectorStats:
    """Bulk-load `schema` (prepared by `prepare_fresh_schema`); raises one of FALLBACK when
    only the transactional path gives the live result.

    A large log is split by partition over `workers` processes (default: BULK_WORKERS when
    the log holds PARALLEL_MIN messages or more; see `projections.bulk_parallel`).
    """
    sizes = await partition_sizes(settings)
    n = workers if workers is not None else BULK_WORKERS
    if workers is None and sum(sizes.values()) < PARALLEL_MIN:
        n = 1
    if n <= 1:
        return await BulkReplayer(
            settings, schema, until=until, fast=fast, on_progress=on_progress
        ).run()
    try:
        return await parallel_bulk_replay(
            settings, schema, sizes, n, until=until, fast=fast, on_progress=on_progress
        )
    except ShardFailed as e:
        raise ReplayError(str(e)) from e


def swap_in(settings: Settings, new: str, now: datetime | None = None) -> str | None:
    """Make `new` the live schema atomically; returns what the old live schema is now called."""
    live = check_schema(settings.db_schema)
    check_schema(new)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    old = f"{live}_pre_{stamp}"[:63]
    with psycopg.connect(settings.database_url, autocommit=False) as conn:
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"provenroute.migrate.{live}",))
        exists = conn.execute("select 1 from pg_namespace where nspname = %s", (live,)).fetchone()
        if exists:
            conn.execute(
                sql.SQL("alter schema {} rename to {}").format(
                    sql.Identifier(live), sql.Identifier(old)
                )
            )
        conn.execute(
            sql.SQL("alter schema {} rename to {}").format(
                sql.Identifier(new), sql.Identifier(live)
            )
        )
        conn.execute(sql.SQL("set local search_path to {}").format(sql.Identifier(live)))
        table = conn.execute(
            "select version from routing_tables_in_log_order order by log_rank desc limit 1"
        ).fetchone()
        winner = conn.execute(
            "select run_id from classifier_winners_in_log_order order by log_rank desc limit 1"
        ).fetchone()
        for channel, row in ((CHANNEL_ROUTING_TABLE, table), (CHANNEL_CLASSIFIER_WINNER, winner)):
            if row is not None:
                payload = orjson.dumps({"schema": live, "version": row[0]}).decode()
                conn.execute("select pg_notify(%s, %s)", (channel, payload))
        conn.commit()
    return old if exists else None
