"""Messages to Kafka off the hot path: decision events and session updates.

/decide only puts a message on a bounded in-memory queue (never awaits Kafka); one
background task drains it in batches through an idempotent producer (acks=all). A failed
delivery is retried a few times. Decision events (the bill) are delivered at least once:
when the queue is full or the retries are spent they go to the local spool
(`api.decide.spool`) and are sent again once Kafka takes messages; their `decision_id`
makes the copies harmless. Other messages (session updates: a lost one only costs
stickiness) are dropped and counted. Admin commands go through `send_now`, which waits for
the ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from api.decide.metrics import DecideMetrics
from api.decide.spool import Spool

log = logging.getLogger("provenroute.decide.emitter")

MAX_ATTEMPTS: Final = 3
BATCH: Final = 1000
DURABLE_KINDS: Final = frozenset({"decision"})
"""Kinds that are spooled instead of dropped."""
SPOOL_CHECK_S: Final = 1.0
"""How often the drain task looks for spooled messages to send again, while Kafka takes
messages; after a failure it waits `SPOOL_RETRY_S` before trying the spool again."""
SPOOL_RETRY_S: Final = 15.0
YIELD_EVERY: Final = 16

PLACED_KEYS: Final = 100_000
"""Keys whose partition is remembered per topic (conversation ids repeat: stickiness)."""

_PARTITIONER: Final = DefaultPartitioner()

Value = bytes | Callable[[], bytes]
"""The payload, or a function building it (run off the hot path, in the drain task)."""


@dataclass(slots=True)
class _Pending:
    kind: str
    topic: str
    key: bytes
    value: Value
    attempt: int = 1


class Emitter:
    def __init__(
        self,
        bootstrap: str,
        metrics: DecideMetrics,
        *,
        queue_size: int = 50_000,
        producer_factory: Callable[[], AIOKafkaProducer] | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.metrics = metrics
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_size)
        self._factory = producer_factory or self._default_producer
        self.producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self._closing = False
        self.spool = spool
        self._last_failure = -SPOOL_RETRY_S
        self._next_spool_check = 0.0
        # Label children by kind, resolved once: `labels()` costs a lock and a tuple build,
        # once per decision here.
        self._sent: dict[str, Any] = {}
        self._placement: dict[str, tuple[list[int], dict[bytes, int]]] = {}
        """Per topic: its partitions and the partition of each key seen (see `_place`)."""

    def _default_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            enable_idempotence=True,
            acks="all",
            # Decision events are for billing and analysis, not for anyone waiting: a 50 ms
            # linger batches ~50 of them per produce request at 1,000 req/s. At 5 ms the
            # produce sends were 14 % of a cached /decide's CPU (py-spy).
            linger_ms=50,
            max_batch_size=256 * 1024,
            request_timeout_ms=10_000,
        )

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="decide-emitter")

    @property
    def connected(self) -> bool:
        return self._started.is_set()

    @property
    def queue_full(self) -> bool:
        return self.queue.full()

    def status(self) -> dict[str, object]:
        """What /readyz shows of the queue and the spool."""
        return {
            "depth": self.queue.qsize(),
            "capacity": self.queue.maxsize,
            "full": self.queue_full,
            "spooled": self.spool.pending if self.spool is not None else 0,
        }

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Deliver what is queued (up to `drain_timeout_s`), then stop the producer."""
        self._closing = True
        if self._task is not None:
            if self._started.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drained(), drain_timeout_s)
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        while not self.queue.empty():  # what the drain did not deliver: spooled, not lost
            item = self.queue.get_nowait()
            if not self._spool(item, "shutdown"):
                self.metrics.events_dropped.labels(item.kind, "shutdown").inc()
        if self.spool is not None:
            self.spool.close()
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.producer.stop(), drain_timeout_s)
            self.producer = None

    async def _drained(self) -> None:
        while not self.queue.empty():
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # the batch in flight

    # ---- hot path ----------------------------------------------------------------------

    def enqueue(self, kind: str, topic: str, key: bytes, value: Value) -> bool:
        """Queue a message for delivery; False (and counted) when the queue is full."""
        item = _Pending(kind, topic, key, value)
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.metrics.queue_full.set(1)
            if self._spool(item, "queue_full"):
                return True
            self.metrics.events_dropped.labels(kind, "queue_full").inc()
            return False
        return True

    def _spool(self, item: _Pending, why: str) -> bool:
        """Write a durable-kind message to the spool; False when it is not one (or the
        spool cannot be written, which is logged)."""
        if self.spool is None or item.kind not in DURABLE_KINDS:
            return False
        try:
            value = item.value() if callable(item.value) else item.value
            self.spool.append(item.kind, item.topic, item.key, value)
        except Exception:
            log.exception("cannot spool a %s message", item.kind)
            return False
        self.metrics.events_spooled.labels(item.kind, why).inc()
        self.metrics.spool_pending.set(self.spool.pending)
        return True

    # ---- admin path --------------------------------------------------------------------

    async def send_now(self, topic: str, key: bytes, value: bytes, timeout_s: float = 10.0) -> None:
        """Send and wait for the broker's ack; raises when Kafka is unavailable."""
        async with asyncio.timeout(timeout_s):
            await self._started.wait()
            assert self.producer is not None
            await self.producer.send_and_wait(topic, value, key=key)

    # ---- drain task --------------------------------------------------------------------

    async def _connect(self) -> None:
        backoff = 0.2
        while True:
            producer = self._factory()
            try:
                await producer.start()
            except Exception as e:
                log.warning("kafka producer cannot start (%s); retrying", e)
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self.producer = producer
            self._started.set()
            return

    async def _run(self) -> None:
        await self._connect()
        assert self.producer is not None
        while True:
            try:
                first = await asyncio.wait_for(self.queue.get(), SPOOL_CHECK_S)
            except TimeoutError:
                await self._resend_spooled(self.producer)
                continue
            batch = [first]
            while len(batch) < BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            self.metrics.queue_depth.set(self.queue.qsize())
            if not self.queue.full():
                self.metrics.queue_full.set(0)
            await self._deliver(self.producer, batch)
            if self.queue.qsize() < self.queue.maxsize // 2:
                await self._resend_spooled(self.producer)

    async def _resend_spooled(self, producer: AIOKafkaProducer) -> None:
        """Send the spooled messages again (this process's and any dead one's), at most once
        a `SPOOL_CHECK_S`, and not while Kafka has just refused messages."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        spool = self.spool
        if spool is None or now < self._next_spool_check:
            return
        self._next_spool_check = now + SPOOL_CHECK_S
        if now - self._last_failure < SPOOL_RETRY_S:
            return
        if spool.pending:
            spool.rotate()  # finish our own file so it can be claimed like any other
        for path in spool.claimable():
            with spool.claim(path) as messages:
                if messages is None:
                    continue  # another live process holds it
                for i in range(0, len(messages), BATCH):
                    chunk = messages[i : i + BATCH]
                    await self._deliver(
                        producer, [_Pending(m.kind, m.topic, m.key, m.value) for m in chunk]
                    )
                # Handed on: delivered, back in the queue for a retry, or spooled anew.
                spool.done(path, len(messages))
            self.metrics.spool_pending.set(spool.pending)

    async def _deliver(self, producer: AIOKafkaProducer, batch: list[_Pending]) -> None:
        """Hand `batch` over as one record batch per partition, each message placed where
        `send` would place it (the default partitioner on its key); a message's outcome is
        its record batch's.

        One `send` per message cost about 10 us of CPU in the service's only thread (a
        coroutine chain, a future and the pure-Python murmur2 per message); appending to
        a batch builder costs about 4 (measured against the local broker).
        """
        building: dict[tuple[str, int], tuple[Any, list[_Pending]]] = {}
        sent: list[tuple[list[_Pending], asyncio.Future[object]]] = []
        placers: dict[str, tuple[list[int], dict[bytes, int]]] = {}
        for n, item in enumerate(batch, 1):
            try:
                if callable(item.value):
                    item.value = item.value()  # built once, whatever the retries
                placer = placers.get(item.topic)
                if placer is None:
                    placer = placers[item.topic] = await self._placer(producer, item.topic)
                where = (item.topic, _place(placer, item.key))
                open_batch = building.get(where)
                if open_batch is None:
                    open_batch = building[where] = (producer.create_batch(), [])
                if open_batch[0].append(key=item.key, value=item.value, timestamp=None) is None:
                    # Full: hand it over, then start the next one with this message.
                    del building[where]
                    await self._submit(producer, where, *open_batch, sent)
                    open_batch = building[where] = (producer.create_batch(), [])
                    if open_batch[0].append(key=item.key, value=item.value, timestamp=None) is None:
                        raise ValueError("message larger than a record batch")
                open_batch[1].append(item)
            except Exception as e:
                self._failed(item, e)
            if n % YIELD_EVERY == 0:
                # Values are built and handed over on the loop without a pause: let waiting
                # requests in between, or a batch of hundreds stalls /decide for milliseconds.
                await asyncio.sleep(0)
        for where, open_batch in building.items():
            await self._submit(producer, where, *open_batch, sent)
        for members, fut in sent:
            try:
                await fut
            except Exception as e:
                for item in members:
                    self._failed(item, e)
            else:
                for item in members:
                    counter = self._sent.get(item.kind)
                    if counter is None:
                        counter = self._sent[item.kind] = self.metrics.events_sent.labels(item.kind)
                    counter.inc()

    async def _placer(
        self, producer: AIOKafkaProducer, topic: str
    ) -> tuple[list[int], dict[bytes, int]]:
        """The topic's partitions (waiting for its metadata, as `send` does) and the
        partition of each key seen while they stay the same."""
        partitions = sorted(await producer.partitions_for(topic))
        placer = self._placement.get(topic)
        if placer is None or placer[0] != partitions:
            placer = self._placement[topic] = (partitions, {})
        return placer

    async def _submit(
        self,
        producer: AIOKafkaProducer,
        where: tuple[str, int],
        builder: Any,
        members: list[_Pending],
        sent: list[tuple[list[_Pending], asyncio.Future[object]]],
    ) -> None:
        if not members:
            return
        try:
            fut = await producer.send_batch(builder, where[0], partition=where[1])
        except Exception as e:
            for item in members:
                self._failed(item, e)
        else:
            sent.append((members, fut))

    def _failed(self, item: _Pending, error: Exception) -> None:
        self._last_failure = asyncio.get_running_loop().time()
        if item.attempt < MAX_ATTEMPTS and not self._closing:
            item.attempt += 1
            try:
                self.queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                pass
        if self._spool(item, "delivery_failed"):
            log.warning("spooled a %s message to %s after: %s", item.kind, item.topic, error)
            return
        log.error("giving up on a %s message to %s: %s", item.kind, item.topic, error)
        self.metrics.events_dropped.labels(item.kind, "delivery_failed").inc()


def _place(placer: tuple[list[int], dict[bytes, int]], key: bytes | None) -> int:
    """The partition the producer's default partitioner gives `key` (murmur2 is pure
    Python in aiokafka: a few microseconds, so each key's is remembered)."""
    partitions, known = placer
    if key is None:  # a random one each time, never remembered
        return int(_PARTITIONER(key, partitions, partitions))
    partition = known.get(key)
    if partition is None:
        if len(known) >= PLACED_KEYS:
            known.clear()
        partition = known[key] = _PARTITIONER(key, partitions, partitions)
    return partition
