"""The case-job agent: runs up to N jobs at once, retries failures, dead-letters the rest.

faust-streaming 0.15.3 still commits past in-flight messages at concurrency > 1 (issue 606),
so the agent runs at concurrency 1 and gets parallelism from tasks it starts and acks
itself, in offset order per partition, when each job is done.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from contracts.events import CaseGraded, CaseJobDeadLettered
from contracts.ids import derive_id
from contracts.jobs import MAX_JOB_ATTEMPTS, CaseJob
from contracts.run_progress import RunProgress, result_key
from streams import faults
from streams.agents.channels import Channels, delivered

log = logging.getLogger("provenroute.worker")

RETRY_BACKOFF_S = 2.0
"""A failed job is re-sent after attempt x this many seconds."""
FENCE_POLL_S = 1.0
"""How often a copy held by another worker looks again whether it may run."""

Emit = Callable[[CaseGraded], Awaitable[None]]


class JobExecutor(Protocol):
    """Runs one case job, emitting one CaseGraded per case as it finishes.

    Raising means the job failed (it is retried, then dead-lettered)."""

    async def execute(self, job: CaseJob, emit: Emit, skip: frozenset[str]) -> None: ...


class JobFence(Protocol):
    """Who runs which job across workers (streams.heartbeats.HeartbeatBoard)."""

    worker_id: str
    ready: asyncio.Event

    def job_started(self, job_id: str) -> None: ...
    def job_ended(self, job_id: str, attempt: int | None) -> None: ...
    async def beat(self) -> None: ...
    async def sync(self) -> None: ...
    def claim_holder(self, job_id: str) -> str | None: ...
    def handled_by(self, job_id: str, attempt: int) -> str | None: ...


class CaseJobAgent:
    """Owns the job slots, the in-order acks and the retry / dead-letter path."""

    def __init__(
        self,
        channels: Channels,
        executor: JobExecutor,
        *,
        progress: Callable[[str], RunProgress | None],
        job_slots: int,
        clock: Callable[[], str],
        fence: JobFence | None = None,
    ) -> None:
        self.channels = channels
        self.fence = fence
        self.executor = executor
        self.progress = progress
        self.job_slots = job_slots
        self.clock = clock
        self._job_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._tasks: set[asyncio.Future[Any]] = set()
        self._started: dict[str, float] = {}
        """Job ids in this worker's hands -> when they arrived (monotonic), for `report`."""

    async def run(self, stream: Any) -> None:
        """Up to `job_slots` jobs run at once, each acked when it is done.

        Acks are released in offset order per partition: faust-streaming 0.15.3 can commit
        past an unacked message when acks arrive out of order (issue 606), so a job that
        finishes early waits for the earlier ones before its ack, never before its work.
        """
        slots = asyncio.Semaphore(self.job_slots)
        inflight: dict[tuple[str, int], collections.deque[list[Any]]] = {}
        manual = stream.noack()
        async for event in manual.events():
            await slots.acquire()
            tp = (event.message.topic, event.message.partition)
            entry: list[Any] = [event, False]
            inflight.setdefault(tp, collections.deque()).append(entry)
            task = asyncio.create_task(self._job_task(event.message.value, slots))
            self._keep(task)
            task.add_done_callback(functools.partial(self._finished, manual, inflight[tp], entry))

    def _keep(self, task: asyncio.Future[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _finished(
        self,
        stream: Any,
        queue: collections.deque[list[Any]],
        entry: list[Any],
        _task: asyncio.Future[Any],
    ) -> None:
        entry[1] = True
        while queue and queue[0][1]:
            event = queue.popleft()[0]
            self._keep(asyncio.ensure_future(stream.ack(event)))

    async def _job_task(self, raw: bytes | None, slots: asyncio.Semaphore) -> None:
        try:
            try:
                job = CaseJob.model_validate_json(raw or b"")
            except Exception as e:
                log.error("undecodable case job dead-lettered: %s", e)
                await self._dlq_raw(raw or b"")
                return
            # No per-process cap by run here: the run's owner releases at most maxConcurrency
            # of its jobs at once across all workers (streams.agents.aggregator).
            if faults.first_time(faults.DROP_FIRST_JOB):
                return  # acked, never run: a job message lost (the stall re-send's test)
            self._started[job.job_id] = time.monotonic()
            try:
                await self._run_job(job)
            finally:
                self._started.pop(job.job_id, None)
        except Exception:  # a bug here must show, not vanish into an unread task
            log.exception("case job task failed")
            raise
        finally:
            slots.release()

    def report(self, older_than_s: float) -> list[tuple[str, float]]:
        """Jobs held longer than `older_than_s` (id, seconds), longest first: what a stalled
        run is waiting on, in the worker's log."""
        now = time.monotonic()
        held = [(j, now - t) for j, t in self._started.items() if now - t > older_than_s]
        return sorted(held, key=lambda x: -x[1])

    async def _dlq_raw(self, raw: bytes) -> None:
        try:
            await self.channels.case_jobs_dlq.send(value=raw)
        except Exception:
            log.exception("dead-lettering failed")

    async def _run_job(self, job: CaseJob) -> None:
        # At-least-once delivery can hand this worker two copies of one job (a redelivery
        # and its retry): they run one after the other, so the second finds the first's
        # results instead of fighting it for the job's container. Across workers the
        # fence does the same.
        lock = self._job_locks.get(job.job_id)
        if lock is None:
            lock = self._job_locks[job.job_id] = asyncio.Lock()
        async with lock:
            if self.fence is not None and not await self._claim(self.fence, job):
                return
            handled: int | None = job.attempt
            try:
                progress = self.progress(job.run_id)
                if progress is not None and progress.completed:
                    return  # a late duplicate of a finished run's job
                done = set(progress.outcomes) if progress else set()
                if all(result_key(job.model, c, job.rep) in done for c in job.case_ids):
                    return  # a redelivered job whose results are all in
                deliveries: list[Any] = []

                async def emit(event: CaseGraded) -> None:
                    deliveries.append(await self.channels.submit_event(event))

                await self.executor.execute(
                    job,
                    emit,
                    frozenset(c for c in job.case_ids if result_key(job.model, c, job.rep) in done),
                )
                # "Handled" goes on the board only once the broker holds every result: a
                # copy elsewhere skips this attempt on that word alone.
                for pending in deliveries:
                    await delivered(pending)
                log.info("job %s #%d done: %d results", job.job_id, job.attempt, len(deliveries))
            except asyncio.CancelledError:
                handled = None  # not handled: its redelivered copy must run
                raise
            except Exception as e:
                await self._job_failed(job, e)
            finally:
                if self.fence is not None:
                    self.fence.job_ended(job.job_id, handled)

    async def _claim(self, fence: JobFence, job: CaseJob) -> bool:
        """Announce the job on the board and run it only when no other live worker holds
        it; skip it once another worker has handled this attempt (True: run it here)."""
        await fence.ready.wait()
        waiting_on: str | None = None
        polls = 0
        while True:
            fence.job_started(job.job_id)
            try:
                await fence.beat()
                await fence.sync()
            except Exception as e:  # the board is unreachable: look again, never drop the job
                fence.job_ended(job.job_id, None)
                log.warning("job %s: heartbeat board unavailable (%s); retrying", job.job_id, e)
                await asyncio.sleep(FENCE_POLL_S)
                continue
            handled = fence.handled_by(job.job_id, job.attempt)
            holder = fence.claim_holder(job.job_id)
            if handled is None and holder in (None, fence.worker_id):
                if waiting_on is not None:
                    log.info("job %s: %s let it go; running it here", job.job_id, waiting_on)
                return True
            fence.job_ended(job.job_id, None)
            if handled is not None:
                log.info("job %s #%d already handled by %s", job.job_id, job.attempt, handled)
                return False
            polls += 1
            if holder != waiting_on or polls % 30 == 0:
                log.info("job %s is running on %s; this copy waits for it", job.job_id, holder)
                waiting_on = holder
            await asyncio.sleep(FENCE_POLL_S)

    async def _job_failed(self, job: CaseJob, error: Exception) -> None:
        reason = f"{type(error).__name__}: {error}"[:2000]
        try:
            if job.attempt < MAX_JOB_ATTEMPTS:
                log.warning(
                    "job %s attempt %d failed (%s); retrying", job.job_id, job.attempt, reason
                )
                # A pause before the retry, so a passing outage is not burnt through at once.
                await asyncio.sleep(RETRY_BACKOFF_S * job.attempt)
                retry = job.model_copy(update={"attempt": job.attempt + 1})
                await delivered(
                    await self.channels.case_jobs.send(
                        key=job.job_id.encode(), value=retry.model_dump_json().encode()
                    )
                )
                return
            log.error("job %s dead-lettered after %d attempts: %s", job.job_id, job.attempt, reason)
            await self.channels.case_jobs_dlq.send(
                key=job.job_id.encode(), value=job.model_dump_json().encode()
            )
            await self.channels.deliver_event(
                CaseJobDeadLettered(
                    event_id=derive_id("CaseJobDeadLettered", job.job_id),
                    occurred_at=self.clock(),
                    correlation_id=job.correlation_id,
                    run_id=job.run_id,
                    job_id=job.job_id,
                    model=job.model,
                    case_ids=job.case_ids,
                    rep=job.rep,
                    attempts=job.attempt,
                    error=reason or "unknown error",
                )
            )
        except Exception:
            log.exception("could not retry or dead-letter job %s", job.job_id)
