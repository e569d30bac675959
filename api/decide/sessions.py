"""Per-conversation sessions shared by every decide replica (the seed's Durable Object).

Mechanism: one compacted Kafka topic, `decide-sessions`, keyed by conversation id, is the
sessions log. Every replica reads every partition of it (assigned, no consumer group: a
replica joining or leaving moves nothing and pauses no one) into its local `SessionStore`,
and writes a conversation's new record straight to it. Records are versioned (see
`session_record`), so all replicas converge on the same record per conversation whatever
order their writes race in, and a stale write never re-anchors a session.

A replica is ready once it has read the log up to where it ended when the replica started;
it never needs to own a partition. Before that, or when Kafka fails, /decide still answers:
`get` returns None (a fresh pick, no stickiness) and the reason is logged and counted.

Idle sessions expire: a replica tombstones (null value, header `expires-version`) every
session not written for `ttl_s`; a tombstone deletes only up to the version it names, so a
turn that raced it survives (and the tombstone's writer re-asserts the record, so
compaction keeps it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from api.decide.metrics import DecideMetrics
from api.decide.session_record import SessionRecord, successor, write_needed
from api.decide.session_store import LogEntry, SessionStore

log = logging.getLogger("provenroute.decide.sessions")

EXPIRES_HEADER: Final = "expires-version"
BY_HEADER: Final = "by"
SWEEP_BATCH: Final = 5_000
FETCH_RECORDS: Final = 2_000
LOG_EVERY_S: Final = 10.0


class Sessions:
    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        replica_id: str,
        metrics: DecideMetrics,
        ttl_s: float,
        queue_size: int = 50_000,
        pending_ttl_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.replica_id = replica_id
        self.metrics = metrics
        self.ttl_s = ttl_s
        self.refresh_s = ttl_s / 4
        self.sweep_interval_s = min(ttl_s / 10, 300.0)
        self.clock = clock
        self.store = SessionStore(
            pending_ttl_s=pending_ttl_s,
            on_unconfirmed=lambda key: self.degraded("write_unconfirmed"),
        )
        self.outbox: asyncio.Queue[tuple[str, bytes | None, list[tuple[str, bytes]]]] = (
            asyncio.Queue(maxsize=queue_size)
        )
        self.state = "starting"
        """starting, catching_up, ready; `error` says what went wrong last."""
        self.error: str | None = None
        self.caught_up_s: float | None = None
        """Seconds from start to ready (the time to ready after a restart)."""
        self.applied = 0
        self._started_at = time.monotonic()
        self._tasks: list[asyncio.Task[Any]] = []
        self._logged: dict[str, tuple[float, int]] = {}

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    # ---- the hot path (never raises, never awaits) ----------------------------------------

    def get(self, conversation_id: str) -> SessionRecord | None:
        """The conversation's session, or None: none yet, or sessions degraded (counted)."""
        if self.state != "ready":
            self.degraded("not_ready")
            return None
        try:
            return self.store.get(conversation_id)
        except Exception as e:
            self.degraded("read_failed", e)
            return None

    def update(
        self, conversation_id: str, base: SessionRecord | None, updated: SessionRecord
    ) -> None:
        """Record what serving a request changed; `base` is what `get` returned for it."""
        if self.state != "ready":
            return  # no base to build on: the log keeps what it has
        try:
            now = self.clock()
            if not write_needed(base, updated, now, self.refresh_s):
                return
            record = successor(
                base,
                updated,
                self.store.get(conversation_id),
                now=now,
                writer=self.replica_id,
            )
            body = record.model_dump_json().encode()
        except Exception as e:
            self.degraded("write_failed", e)
            return
        self.store.put_pending(conversation_id, record)
        self._send(conversation_id, body, [], kind="session")

    def _send(
        self, key: str, value: bytes | None, headers: list[tuple[str, bytes]], *, kind: str
    ) -> None:
        try:
            self.outbox.put_nowait((key, value, headers))
        except asyncio.QueueFull:
            self.metrics.events_dropped.labels(kind, "queue_full").inc()
            self.degraded("write_dropped")

    def degraded(self, reason: str, error: Exception | None = None) -> None:
        """Count and (at most every 10 s per reason) log a request served without sessions
        or a session write lost."""
        self.metrics.sessions_degraded.labels(reason).inc()
        now = time.monotonic()
        last, since = self._logged.get(reason, (0.0, 0))
        if now - last >= LOG_EVERY_S:
            detail = f": {error!r}" if error is not None else ""
            log.warning(
                "sessions degraded (%s, %d more since the last report; state=%s, error=%s)%s",
                reason,
                since,
                self.state,
                self.error,
                detail,
            )
            self._logged[reason] = (now, 0)
        else:
            self._logged[reason] = (last, since + 1)

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._started_at = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._follow(), name="sessions-follow"),
            asyncio.create_task(self._write(), name="sessions-write"),
            asyncio.create_task(self._sweep(), name="sessions-sweep"),
        ]

    async def wait_ready(self, poll_s: float = 0.05) -> None:
        while not self.ready:
            await asyncio.sleep(poll_s)

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout_s):
                while not self.outbox.empty():
                    await asyncio.sleep(0.02)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []
        self.store.close()

    def status(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "state": self.state,
            "error": self.error,
            "replica": self.replica_id,
            "applied": self.applied,
            "caught_up_s": self.caught_up_s,
        }

    # ---- following the log -----------------------------------------------------------------

    async def _follow(self) -> None:
        """Read every partition from the start, for ever; reconnect where it stopped."""
        positions: dict[TopicPartition, int] = {}
        backoff = 0.2
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=50,  # replication lag between replicas, not throughput
                max_partition_fetch_bytes=4 * 1024 * 1024,
                request_timeout_ms=15_000,
            )
            try:
                partitions = await self._partitions()
                await consumer.start()
                consumer.assign(partitions)
                for tp in partitions:
                    if tp in positions:
                        consumer.seek(tp, positions[tp])
                    else:
                        await consumer.seek_to_beginning(tp)
                if self.state != "ready":
                    self.state = "catching_up"
                    targets = await consumer.end_offsets(partitions)
                    await self._catch_up(consumer, targets, positions)
                    self.state = "ready"
                    self.caught_up_s = round(time.monotonic() - self._started_at, 3)
                    self.metrics.sessions_count.set(self.store.count())
                    log.info(
                        "sessions ready: %d applied, %d live, in %.1f s",
                        self.applied,
                        self.store.count(),
                        self.caught_up_s,
                    )
                self.error = None
                backoff = 0.2
                while True:
                    await self._fetch(consumer, positions, timeout_ms=500)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.error = f"{type(e).__name__}: {e}"
                log.warning("sessions log unreadable (%s); retrying", self.error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _partitions(self) -> list[TopicPartition]:
        # The consumer only learns a topic's partitions once it follows it; ask the cluster.
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=15_000)
        await admin.start()
        try:
            described = await admin.describe_topics([self.topic])
        finally:
            await admin.close()
        numbers = sorted(
            p["partition"]
            for t in described
            if t["topic"] == self.topic and t["error_code"] == 0
            for p in t["partitions"]
        )
        if not numbers:
            raise LookupError(f"topic {self.topic} does not exist (or has no partitions)")
        return [TopicPartition(self.topic, p) for p in numbers]

    async def _catch_up(
        self,
        consumer: AIOKafkaConsumer,
        targets: dict[TopicPartition, int],
        positions: dict[TopicPartition, int],
    ) -> None:
        while any(positions.get(tp, 0) < end for tp, end in targets.items()):
            await self._fetch(consumer, positions, timeout_ms=200)
            for tp, end in targets.items():
                if positions.get(tp, 0) < end:
                    # Compaction leaves gaps: the position is the truth, not the last offset.
                    positions[tp] = max(positions.get(tp, 0), await consumer.position(tp))

    async def _fetch(
        self, consumer: AIOKafkaConsumer, positions: dict[TopicPartition, int], timeout_ms: int
    ) -> None:
        batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=FETCH_RECORDS)
        entries: list[LogEntry] = []
        for tp, messages in batches.items():
            for m in messages:
                entry = _entry(m)
                if entry is not None:
                    entries.append(entry)
            if messages:
                positions[tp] = messages[-1].offset + 1
        if not entries:
            return
        for key, body in self.store.apply(entries, self.replica_id):
            self._send(key, body, [], kind="session")
        self.applied += len(entries)

    # ---- writing ---------------------------------------------------------------------------

    async def _write(self) -> None:
        producer: AIOKafkaProducer | None = None
        backoff = 0.2
        while producer is None:
            candidate = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
                request_timeout_ms=10_000,
            )
            try:
                await candidate.start()
                producer = candidate
            except Exception as e:
                log.warning("sessions producer cannot start (%s); retrying", e)
                with contextlib.suppress(Exception):
                    await candidate.stop()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        try:
            while True:
                batch = [await self.outbox.get()]
                while len(batch) < 1000 and not self.outbox.empty():
                    batch.append(self.outbox.get_nowait())
                await self._deliver(producer, batch)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5.0)

    async def _deliver(
        self,
        producer: AIOKafkaProducer,
        batch: list[tuple[str, bytes | None, list[tuple[str, bytes]]]],
    ) -> None:
        futures = []
        for key, value, headers in batch:
            kind = "session" if value is not None else "session_tombstone"
            try:
                fut = await producer.send(
                    self.topic, value, key=orjson.dumps(key), headers=headers or None
                )
                futures.append((kind, fut))
            except Exception as e:
                self._lost(kind, e)
        for kind, fut in futures:
            try:
                await fut
                self.metrics.events_sent.labels(kind).inc()
            except Exception as e:
                self._lost(kind, e)

    def _lost(self, kind: str, error: Exception) -> None:
        # The idempotent producer already retried inside its timeout; a pending write stays
        # readable here until it expires (counted as write_unconfirmed then).
        self.metrics.events_dropped.labels(kind, "delivery_failed").inc()
        self.degraded("write_failed", error)

    # ---- expiry ------------------------------------------------------------------------------

    async def _sweep(self) -> None:
        """Tombstone idle sessions. Every replica sweeps, at jittered times, so one that
        dies does not stop expiry; a duplicate tombstone deletes nothing more."""
        while True:
            await asyncio.sleep(self.sweep_interval_s * random.uniform(0.5, 1.5))
            if not self.ready:
                continue
            try:
                sent, after = self.sweep_once()
                while after is not None:  # a page at a time, letting requests in between
                    await asyncio.sleep(0.05)
                    more, after = self.sweep_once(after)
                    sent += more
                if sent:
                    log.info("%d idle sessions expired", sent)
                self.metrics.sessions_count.set(self.store.count())
            except Exception:
                log.exception("sweeping idle sessions failed")

    def sweep_once(self, after: tuple[float, str] | None = None) -> tuple[int, Any]:
        """Send tombstones for up to SWEEP_BATCH idle sessions past `after`; returns how
        many were sent and where the next page starts (None: the pass is over)."""
        expired = self.store.expired(self.clock() - self.ttl_s, SWEEP_BATCH, after)
        me = self.replica_id.encode()
        for key, version, _ in expired:
            headers = [(EXPIRES_HEADER, str(version).encode()), (BY_HEADER, me)]
            self._send(key, None, headers, kind="session_tombstone")
        last = (expired[-1][2], expired[-1][0]) if len(expired) == SWEEP_BATCH else None
        return len(expired), last


def _entry(message: Any) -> LogEntry | None:
    try:
        key = orjson.loads(message.key)
    except (orjson.JSONDecodeError, TypeError):
        return None
    if not isinstance(key, str):
        return None
    expires: int | None = None
    by = ""
    for name, value in message.headers or ():
        if name == EXPIRES_HEADER:
            with contextlib.suppress(ValueError):
                expires = int(value)
        elif name == BY_HEADER:
            by = value.decode(errors="replace")
    return LogEntry(
        key=key,
        value=message.value,
        timestamp=message.timestamp / 1000.0,
        expires_version=expires,
        by=by,
    )
