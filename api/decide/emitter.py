"""Messages to Kafka off the hot path: decision events and session updates.

/decide only puts a message on a bounded in-memory queue (never awaits Kafka); one
background task drains it in batches through an idempotent producer (acks=all). A full
queue drops the message (counted); a failed delivery is retried a few times, then dropped
(counted and logged). Admin commands go through `send_now`, which waits for the ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aiokafka import AIOKafkaProducer

from api.decide.metrics import DecideMetrics

log = logging.getLogger("provenroute.decide.emitter")

MAX_ATTEMPTS: Final = 3
BATCH: Final = 1000
YIELD_EVERY: Final = 16

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
    ) -> None:
        self.bootstrap = bootstrap
        self.metrics = metrics
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_size)
        self._factory = producer_factory or self._default_producer
        self.producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self._closing = False

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
        try:
            self.queue.put_nowait(_Pending(kind, topic, key, value))
        except asyncio.QueueFull:
            self.metrics.events_dropped.labels(kind, "queue_full").inc()
            return False
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
            batch = [await self.queue.get()]
            while len(batch) < BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            self.metrics.queue_depth.set(self.queue.qsize())
            await self._deliver(self.producer, batch)

    async def _deliver(self, producer: AIOKafkaProducer, batch: list[_Pending]) -> None:
        sent: list[tuple[_Pending, asyncio.Future[object]]] = []
        for n, item in enumerate(batch, 1):
            try:
                value = item.value() if callable(item.value) else item.value
                sent.append((item, await producer.send(item.topic, value, key=item.key)))
            except Exception as e:
                self._failed(item, e)
            if n % YIELD_EVERY == 0:
                # Values are built and handed over on the loop without a pause: let waiting
                # requests in between, or a batch of hundreds stalls /decide for milliseconds.
                await asyncio.sleep(0)
        for item, fut in sent:
            try:
                await fut
            except Exception as e:
                self._failed(item, e)
            else:
                self.metrics.events_sent.labels(item.kind).inc()

    def _failed(self, item: _Pending, error: Exception) -> None:
        if item.attempt < MAX_ATTEMPTS and not self._closing:
            item.attempt += 1
            try:
                self.queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                pass
        log.error("giving up on a %s message to %s: %s", item.kind, item.topic, error)
        self.metrics.events_dropped.labels(item.kind, "delivery_failed").inc()
