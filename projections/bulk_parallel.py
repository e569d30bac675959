"""A bulk replay split by partition over several processes (this one included).

Each process decodes, claims and COPYs its share of the partitions on its own connection;
this process loads the first share itself (its modules and settings are already loaded;
a spawned process spends about half a second of CPU importing before it reads a record),
then restores the constraints, which also checks what the split assumes: a natural key
lives in one partition (the event key is the run id) and a foreign key points within it
(else a key or foreign key fails and the replay falls back).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import time
from collections.abc import Callable
from typing import Any

import psycopg

from infra.settings import Settings
from projections.bulk import BulkReplayer, BulkShard
from projections.bulk_writer import BulkLoader, BulkUnsupported
from projections.stream import ErrorRow, ProjectorStats
from streams.topics import DECISIONS, EVENTS

FALLBACK = (BulkUnsupported, psycopg.errors.IntegrityError, psycopg.errors.DataError)
"""What makes a bulk replay give way to the transactional path."""

Outcome = tuple[Any, ...]
"""("ok", stats, errors, folded positions, copied rows) or ("fallback" | "error", reason)."""


class ShardFailed(RuntimeError):
    """A replay process failed for another reason than FALLBACK (or died)."""


def split(sizes: dict[tuple[str, int], int], n: int) -> list[list[tuple[str, int]]]:
    """Partitions over `n` shares, biggest first onto the lightest share."""
    shares: list[list[tuple[str, int]]] = [[] for _ in range(n)]
    loads = [0] * n
    for tp, size in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        i = loads.index(min(loads))
        shares[i].append(tp)
        loads[i] += size
    return shares


async def parallel_bulk_replay(
    settings: Settings,
    schema: str,
    sizes: dict[tuple[str, int], int],
    n: int,
    *,
    until: str | None = None,
    fast: bool = True,
    on_progress: Callable[[ProjectorStats], None] | None = None,
) -> ProjectorStats:
    """Load `schema` with `n` processes (this one and n - 1 spawned); raises one of
    FALLBACK when a process met something only the transactional path reproduces."""
    started = time.monotonic()
    loader = BulkLoader(settings.database_url, schema)
    try:
        await asyncio.to_thread(loader.open, shared=True)
        mine, *theirs = (BulkShard(tuple(s), loader.deferred) for s in split(sizes, n))
        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        counters = [ctx.Value("q", 0) for _ in theirs]
        procs = [
            ctx.Process(
                target=_shard_main,
                args=(settings, schema, until, fast, shard, counters[i], results),
                name=f"provenroute-replay-{i + 1}",
                daemon=True,
            )
            for i, shard in enumerate(theirs)
        ]
        for proc in procs:
            proc.start()
        progress = ProjectorStats(started=started, to_drain=sum(sizes.values()))
        own = BulkReplayer(settings, schema, until=until, fast=fast, shard=mine)

        def report(_stats: ProjectorStats | None = None) -> None:
            if on_progress is not None:
                done = sum(c.value for c in counters)
                progress.events_applied = own.stats.events_applied + done
                progress.elapsed_s = time.monotonic() - started
                on_progress(progress)

        own.on_progress = report
        outcomes: list[Outcome] = []
        own_task = asyncio.ensure_future(_outcome(own))
        try:
            while len(outcomes) < len(procs):
                try:
                    outcomes.append(await asyncio.to_thread(results.get, True, 0.25))
                except queue.Empty:
                    if any(p.exitcode not in (None, 0) for p in procs):
                        raise ShardFailed("a replay process died") from None
                    if own_task.done():
                        _raise(own_task.result())
                report()
                _raise(*outcomes)
            outcomes.append(await own_task)
            _raise(outcomes[-1])
        finally:
            own_task.cancel()
            for proc in procs:
                if proc.is_alive() and len(outcomes) < n:
                    proc.kill()
                await asyncio.to_thread(proc.join, 10)
        stats = ProjectorStats(started=started, to_drain=progress.to_drain, workers=n)
        errors: list[ErrorRow] = []
        offsets: list[tuple[str, int, int]] = []
        for _ok, shard_stats, shard_errors, folded, copied in outcomes:
            for table, count in copied.items():
                loader.copied[table] += count
            for name in ("events_applied", "ignored", "failed", "skipped_below_offset", "batches"):
                setattr(stats, name, getattr(stats, name) + getattr(shard_stats, name))
            errors += shard_errors
            offsets += [(t, p, off) for (t, p), off in folded.items() if off > 0]
            for (t, p), off in folded.items():
                stats.positions.setdefault(t, {})[p] = off
        stats.load_s = time.monotonic() - started
        await asyncio.to_thread(loader.finish, sorted(offsets), sorted(errors, key=repr))
        stats.elapsed_s = time.monotonic() - started
        stats.restore_s = stats.elapsed_s - stats.load_s
        return stats
    finally:
        await asyncio.to_thread(loader.close)


def _raise(*failed: Outcome) -> None:
    """Raise for the first outcome that is not "ok" (if any)."""
    for kind, *rest in failed:
        if kind == "fallback":
            raise BulkUnsupported(rest[0])
        if kind != "ok":
            raise ShardFailed(f"a replay process failed: {rest[0]}")


async def _outcome(loader: BulkReplayer) -> Outcome:
    """Run a shard's loader; its result or its failure as an Outcome."""
    try:
        stats = await loader.run()
    except FALLBACK as e:
        return ("fallback", f"{type(e).__name__}: {e}")
    except Exception as e:  # reported like a spawned process's failure
        return ("error", f"{type(e).__name__}: {e}")
    folded = {(tp.topic, tp.partition): off for tp, off in loader.folder.folded.items()}
    return ("ok", stats, loader.errors, folded, loader.copied)


def _shard_main(
    settings: Settings,
    schema: str,
    until: str | None,
    fast: bool,
    shard: BulkShard,
    counter: Any,
    results: Any,
) -> None:
    """A spawned replay process: load the shard's partitions, put its Outcome on `results`."""

    def progress(stats: ProjectorStats) -> None:
        counter.value = stats.events_applied + stats.ignored + stats.failed

    try:
        loader = BulkReplayer(
            settings, schema, until=until, fast=fast, shard=shard, on_progress=progress
        )
        results.put(asyncio.run(_outcome(loader)))
    except BaseException as e:  # reported to the parent, which raises
        results.put(("error", f"{type(e).__name__}: {e}"))


async def partition_sizes(settings: Settings) -> dict[tuple[str, int], int]:
    """Messages per partition of the projected topics (end minus beginning offsets)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        tps = [
            TopicPartition(topic, p)
            for topic in (settings.topic(EVENTS.name), settings.topic(DECISIONS.name))
            for p in sorted(cluster.partitions_for_topic(topic) or ())
        ]
        if not tps:
            return {}
        end = await consumer.end_offsets(tps)
        begin = await consumer.beginning_offsets(tps)
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): end[tp] - begin[tp] for tp in tps}
