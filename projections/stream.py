"""Reading the log into batches of folded rows: what the live projector and the bulk loader share.

A `LogFolder` turns `getmany` results into a `Batch`: messages below the folded position
are skipped, tombstones and unknown types are ignored (their offsets still advance),
undecodable payloads become error items, and with `until` each partition stops at its
first later event. No IO: the callers own the consumer and the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts.codec import DecodeError, decode_event
from contracts.events import EVENT_CLASSES
from infra.settings import Settings
from projections.fast_fold import fast_fold
from projections.fold import Row, fold
from projections.tables import POSITIONED

log = logging.getLogger("provenroute.projector")

RAW_EXCERPT = 500

ErrorRow = tuple[str, int, int, str | None, str, str | None]
"""A projection_errors row: topic, partition, offset, event type, reason, raw excerpt."""


def parse_ts(value: str) -> datetime:
    """An ISO-8601 timestamp; a naive one is taken as UTC."""
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class ProjectorRefused(RuntimeError):
    """The target schema must not be projected into (an unfinished bulk replay)."""


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
    took_over: bool = False
    """A following projector: it acquired the schema's projector lock (it is the active one)."""
    to_drain: int | None = None
    """Draining: messages between the start positions and the end offsets seen at start."""
    started: float = field(default_factory=time.monotonic)
    elapsed_s: float = 0.0
    load_s: float = 0.0
    """A bulk replay: seconds until every row was copied (the rest restores constraints)."""
    restore_s: float = 0.0
    """A bulk replay: seconds spent re-creating and validating keys and indexes."""
    positions: dict[str, dict[int, int]] = field(default_factory=dict)
    """Next offset per topic and partition when the projector stopped."""

    @property
    def events_per_s(self) -> float:
        return self.events_applied / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def record_positions(self, positions: dict[TopicPartition, int]) -> None:
        self.elapsed_s = time.monotonic() - self.started
        self.positions = {}
        for tp, off in positions.items():
            self.positions.setdefault(tp.topic, {})[tp.partition] = off


@dataclass(slots=True)
class Item:
    tp: TopicPartition
    offset: int
    event_type: str | None
    rows: list[Row]
    error: str | None = None
    raw: bytes | None = None
    fast: bool = False
    """Folded by the fast path: its timestamps are datetimes, not ISO strings."""

    def error_row(self) -> ErrorRow:
        assert self.error is not None
        excerpt = None if self.raw is None else self.raw[:RAW_EXCERPT].decode("utf-8", "replace")
        return (self.tp.topic, self.tp.partition, self.offset, self.event_type, self.error, excerpt)


@dataclass
class Batch:
    items: list[Item]
    start: dict[TopicPartition, int]
    """Next offset per partition before this batch (what Postgres must hold)."""
    end: dict[TopicPartition, int]
    """Next offset per partition after it."""
    applied: int = 0
    ignored: int = 0


def is_set(stop: asyncio.Event | None) -> bool:
    return stop is not None and stop.is_set()


def _later_than(raw: bytes, until: datetime) -> bool:
    """For messages that do not decode: is their `occurred_at` (if readable) past `until`?"""
    try:
        value = orjson.loads(raw).get("occurred_at")
        return isinstance(value, str) and parse_ts(value) > until
    except (orjson.JSONDecodeError, AttributeError, ValueError):
        return False


def new_consumer(settings: Settings, *, fetch_mb: int = 64) -> AIOKafkaConsumer:
    """A consumer without a group (positions live in Postgres), fetching in large batches.

    `fetch_mb` bounds one fetch response (a partition's share is an eighth of it): what the
    consumer may hold in memory ahead of the caller.
    """
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=fetch_mb * 1024 * 1024 // 8,
        fetch_max_bytes=fetch_mb * 1024 * 1024,
        fetch_max_wait_ms=100,
    )


async def assign_partitions(
    consumer: AIOKafkaConsumer,
    topics: tuple[str, ...],
    only: tuple[tuple[str, int], ...] | None = None,
) -> list[TopicPartition]:
    """Assign every partition of `topics` (or the `only` ones among them) to `consumer`."""
    # `consumer.topics()` fetches metadata but leaves the consumer's own cluster view
    # as it was (aiokafka 0.14), so partitions_for_topic would answer None: read the
    # freshly fetched cluster instead.
    cluster = await consumer._client.fetch_all_metadata()
    tps: list[TopicPartition] = []
    for topic in topics:
        parts = cluster.partitions_for_topic(topic)
        if not parts:
            log.warning("topic %s does not exist; not projecting it", topic)
            continue
        tps += [TopicPartition(topic, p) for p in sorted(parts)]
    if only is not None:
        mine = set(only)
        tps = [tp for tp in tps if (tp.topic, tp.partition) in mine]
    consumer.assign(tps)
    return tps


class LogFolder:
    """Folds consumed messages into batches, tracking the folded position per partition."""

    def __init__(self, stats: ProjectorStats, *, until: datetime | None, fast: bool) -> None:
        self.stats = stats
        self.until = until
        self.fast = fast
        """Fold the high-volume events without pydantic validation (trusted replays)."""
        self.folded: dict[TopicPartition, int] = {}
        """Next offset per partition as folded (ahead of what is committed)."""
        self.cut: set[TopicPartition] = set()
        """Partitions stopped by `until` (their next event is later than it)."""

    def finished(self, tps: list[TopicPartition], end: dict[TopicPartition, int]) -> bool:
        """Every partition folded up to `end` or cut by `until`."""
        return all(tp in self.cut or self.folded[tp] >= end.get(tp, 0) for tp in tps)

    def active(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [tp for tp in tps if tp not in self.cut]

    def _decode_fold(self, raw: bytes) -> tuple[str | datetime, str | None, list[Row]]:
        """(occurred_at, type, rows) of a message through the validating path; raises
        DecodeError."""
        event = decode_event(raw)
        return event.occurred_at, event.type, fold(event)

    def fold(self, data: dict[TopicPartition, list[Any]]) -> Batch:
        items: list[Item] = []
        start: dict[TopicPartition, int] = {}
        end: dict[TopicPartition, int] = {}
        applied = ignored = skipped = 0
        until = self.until
        # Hoisted: this loop runs once per message of a replay (a million times), where
        # every attribute lookup and call counts (measured: 2.9 -> 1.9 us per event).
        fast = fast_fold if self.fast else _no_fast_fold
        decode_fold = self._decode_fold
        append = items.append
        positioned = POSITIONED
        cut = self.cut
        occurred_at: str | datetime
        type_name: str | None
        rows: list[Row]
        for tp, msgs in data.items():
            if tp in cut:
                continue
            pos = self.folded.get(tp, 0)
            start[tp] = pos
            for m in msgs:
                offset = m.offset
                if offset < pos:
                    skipped += 1
                    continue
                raw = m.value
                if raw is None:
                    ignored += 1
                    pos = offset + 1
                    continue
                folded = fast(raw)
                if folded is not None:
                    occurred_at, type_name, rows = folded
                    if until is not None and occurred_at > until:
                        cut.add(tp)
                        break
                    is_fast = True
                else:
                    try:
                        occurred_at, type_name, rows = decode_fold(raw)
                    except DecodeError as e:
                        if until is not None and _later_than(raw, until):
                            cut.add(tp)
                            break
                        if e.type_name is not None and e.type_name not in EVENT_CLASSES:
                            ignored += 1
                        else:
                            append(Item(tp, offset, e.type_name, [], e.reason, raw))
                        pos = offset + 1
                        continue
                    is_fast = False
                    if until is not None:
                        moment = (
                            occurred_at
                            if isinstance(occurred_at, datetime)
                            else parse_ts(occurred_at)
                        )
                        if moment > until:
                            cut.add(tp)
                            break
                if rows:
                    if rows[0][0] in positioned:  # its event's first row (a unit test pins it)
                        where = (tp.partition, offset)
                        rows = [(t, v + where) if t in positioned else (t, v) for t, v in rows]
                    append(Item(tp, offset, type_name, rows, None, None, is_fast))
                    applied += 1
                else:
                    ignored += 1
                pos = offset + 1
            end[tp] = pos
        self.stats.skipped_below_offset += skipped
        self.folded.update(end)
        return Batch(items, start, end, applied, ignored)


def _no_fast_fold(raw: bytes) -> None:
    """The validating path for every message (a LogFolder with `fast` off)."""
    return None
