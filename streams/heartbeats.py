"""The heartbeat board: this worker's beats out, every worker's beats in (contracts.heartbeats).

Beats go to the one-partition `worker-heartbeats` topic every interval and at once when a
job starts or ends, so a job's start is on the board before anyone could be handed a second
copy of it. Reads are catch-up reads to the end offset taken at the call (as in
`streams.history`): a decision made after `sync()` sees every beat sent before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contracts.heartbeats import (
    HANDLED_KEPT,
    HEARTBEAT_INTERVAL_S,
    Heartbeat,
    attempt_key,
    claim_holder,
    handled_elsewhere,
    live_workers,
)
from streams.janitor import LiveSet, default_worker_id

log = logging.getLogger("provenroute.worker")

GOODBYE_TIMEOUT_S = 5.0
SYNC_TIMEOUT_S = 10.0
"""A catch-up read that cannot reach the end in this long gives up (the board is stale)."""


class HeartbeatBoard:
    """Start it on the worker's loop before any job runs; `stop()` says goodbye."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        worker_id: str | None = None,
        interval_s: float = HEARTBEAT_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.worker_id = worker_id or default_worker_id()
        self.interval_s = interval_s
        self.clock = clock
        self._tp = TopicPartition(topic, 0)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._beats: dict[str, Heartbeat] = {}
        self._claims: dict[str, dict[str, int]] = {}
        """worker -> job id -> offset of the first beat of its current run of the job."""
        self._send_lock = asyncio.Lock()
        self._running: dict[str, int] = {}
        self._handled: deque[str] = deque(maxlen=HANDLED_KEPT)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._read_lock = asyncio.Lock()
        self.ready = asyncio.Event()

    # ---------------------------------------------------------------- lifecycle

    async def start(self, *, publish: bool = True) -> None:
        """Catch up with every beat; with `publish`, beat now and every interval after."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",
        )
        await self._consumer.start()
        self._consumer.assign([self._tp])
        await self._consumer.seek_to_beginning(self._tp)
        if publish:
            self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            await self._producer.start()
            await self.beat()
        await self.sync()
        if publish:
            self._task = asyncio.create_task(self._beat_loop(), name="heartbeats")
            log.info("worker %s beating on %s", self.worker_id, self.topic)
        self.ready.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._producer is not None:
            with contextlib.suppress(Exception):
                # The tombstone: gone cleanly, its containers are safe to remove at once.
                # Bounded: a stop must not hang on an unreachable broker (silence works too).
                await asyncio.wait_for(
                    self._producer.send_and_wait(self.topic, None, key=self.worker_id.encode()),
                    GOODBYE_TIMEOUT_S,
                )
            await self._producer.stop()
            self._producer = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    # ---------------------------------------------------------------- this worker

    def job_started(self, job_id: str) -> None:
        self._running[job_id] = self._running.get(job_id, 0) + 1
        self._wake.set()

    def job_ended(self, job_id: str, attempt: int | None) -> None:
        """The job left this worker: handled (`attempt`), or withdrawn (None) for another
        worker's earlier claim."""
        left = self._running.get(job_id, 1) - 1
        if left > 0:
            self._running[job_id] = left
        else:
            self._running.pop(job_id, None)
        if attempt is not None:
            self._handled.append(attempt_key(job_id, attempt))
        self._wake.set()

    async def beat(self) -> None:
        """Send this worker's state now (serialised: beats reach the log in state order)."""
        assert self._producer is not None, "board not started"
        async with self._send_lock:
            beat = Heartbeat(
                worker_id=self.worker_id,
                sent_at=self.clock(),
                interval_s=self.interval_s,
                running=tuple(sorted(self._running)),
                handled=tuple(self._handled),
            )
            await self._producer.send_and_wait(
                self.topic, orjson.dumps(beat.model_dump()), key=self.worker_id.encode()
            )

    async def _beat_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            try:
                await self.beat()
            except Exception as e:  # a broker hiccup: the next beat tries again
                log.warning("heartbeat not sent: %s", e)

    # ---------------------------------------------------------------- every worker

    async def sync(self) -> None:
        """Read every beat sent before this call (bounded by SYNC_TIMEOUT_S)."""
        consumer = self._consumer
        assert consumer is not None, "board not started"
        async with self._read_lock:
            end = (await consumer.end_offsets([self._tp]))[self._tp]
            deadline = time.monotonic() + SYNC_TIMEOUT_S
            while await consumer.position(self._tp) < end:
                if time.monotonic() > deadline:
                    log.warning("heartbeat board not caught up in %.0f s", SYNC_TIMEOUT_S)
                    return
                batch = await consumer.getmany(self._tp, timeout_ms=500)
                for msgs in batch.values():
                    for m in msgs:
                        self._apply(m.key, m.value, m.offset)

    def _apply(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        if key is None:
            return
        worker = key.decode(errors="replace")
        if value is None:
            self._beats.pop(worker, None)
            self._claims.pop(worker, None)
            return
        try:
            beat = Heartbeat.model_validate(orjson.loads(value))
        except Exception:
            log.warning("unreadable heartbeat of %s skipped", worker)
            return
        self._beats[worker] = beat
        before = self._claims.get(worker, {})
        self._claims[worker] = {job: before.get(job, offset) for job in beat.running}

    def live(self) -> frozenset[str]:
        me = {self.worker_id} if self._producer is not None else set()
        return live_workers(self._beats, self.clock()) | me

    def live_set(self) -> LiveSet:
        return LiveSet(topic=self.topic, workers=self.live())

    def claim_holder(self, job_id: str) -> str | None:
        """The worker that may run `job_id` now (this one included), as of the last sync."""
        return claim_holder(self._claims, job_id, self.live())

    def handled_by(self, job_id: str, attempt: int) -> str | None:
        """The worker that already handled this attempt, this one included: a partition
        that comes back to its worker after a rebalance redelivers what it finished."""
        if attempt_key(job_id, attempt) in self._handled:
            return self.worker_id
        return handled_elsewhere(self._beats, job_id, attempt, self.worker_id)


async def read_live_set(bootstrap: str, topic: str) -> LiveSet:
    """The workers beating on `topic` now, read once (for a sweep before a worker starts)."""
    board = HeartbeatBoard(bootstrap, topic, worker_id="(reader)")
    await board.start(publish=False)
    try:
        return board.live_set()
    finally:
        await board.stop()
