"""The Faust app: topics, tables and three thin agents around contracts' pure functions.

- `commands`  -> decide_command -> events (+ case jobs)            (concurrency 1)
- `case-jobs` -> up to N jobs at once, acked in order -> CaseGraded  (concurrency 1 + tasks)
- `events`    -> evolve_run per run -> completion events + publish  (concurrency 1)

Faust acks a message whose handler raised, so no exception escapes an agent: failures become
events, job retries or dead letters. faust-streaming 0.15.3 still commits past in-flight
messages at concurrency > 1 (issue 606), so every agent runs at concurrency 1; job
parallelism comes from tasks the job agent starts and acks itself, in offset order, when
each job is done (see `_jobs_agent`).

The tables assume one worker process (all partitions local); see README.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import faust
import orjson
from faust.transport.drivers import aiokafka as faust_aiokafka

from contracts.codec import DecodeError, decode_command, decode_event, encode_event
from contracts.command_decider import (
    ADMIN_KEY,
    AdminState,
    ModelRecord,
    decide_command,
    event_key,
    evolve_admin,
    history_key,
    reject,
)
from contracts.commands import Command
from contracts.config import RunKind
from contracts.envelope import EventBase
from contracts.events import CaseGraded, CaseJobDeadLettered, raw_excerpt
from contracts.ids import derive_id
from contracts.jobs import MAX_JOB_ATTEMPTS, CaseJob
from contracts.run_progress import (
    RunProgress,
    completion_events,
    completion_failed,
    evolve_run,
    is_complete,
    measured_records,
    result_key,
)
from infra.clock import utc_now
from infra.settings import Settings
from streams import topics as specs

log = logging.getLogger("provenroute.worker")


class _IdempotentProducer(faust_aiokafka.Producer):  # type: ignore[misc]
    """Faust turns on producer idempotence only inside transactions; our events must not
    duplicate on a producer retry either (acks=all + idempotence)."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


faust_aiokafka.Transport.Producer = _IdempotentProducer

RETRY_BACKOFF_S = 2.0
"""A failed job is re-sent after attempt x this many seconds."""

RESULT_SEP = "\x1e"
"""Between a run id and a result key in the results table's keys."""

RUN_EVENT_TYPES = frozenset(
    {
        "RunStarted",
        "RunModelEnqueued",
        "RunModelCarried",
        "CaseJobsFannedOut",
        "CaseGraded",
        "CaseJobDeadLettered",
        "RunCompleted",
    }
)

Emit = Callable[[CaseGraded], Awaitable[None]]


class JobExecutor(Protocol):
    """Runs one case job, emitting one CaseGraded per case as it finishes.

    Raising means the job failed (it is retried, then dead-lettered)."""

    async def execute(self, job: CaseJob, emit: Emit, skip: frozenset[str]) -> None: ...


class Worker:
    """Holds the Faust app and what its agents share."""

    def __init__(
        self,
        settings: Settings,
        *,
        executor: JobExecutor,
        case_ids: Mapping[RunKind, Sequence[str]],
        clock: Callable[[], str] = utc_now,
        app_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.executor = executor
        self.case_ids = case_ids
        self.clock = clock
        self.credentials = frozenset(settings.provider_credentials)
        self.app = faust.App(
            app_id or f"{settings.topic_prefix}worker",
            broker=f"kafka://{settings.kafka_bootstrap}",
            store="memory://",
            web_enabled=False,
            topic_partitions=8,
            producer_acks=-1,
            consumer_auto_offset_reset="earliest",
            key_serializer="raw",
            value_serializer="raw",
            stream_wait_empty=False,
            broker_commit_interval=0.5,
            # A killed worker's partitions are reassigned after this, not Faust's 60 s.
            broker_session_timeout=10.0,
            broker_heartbeat_interval=2.0,
        )
        t = self.app.topic
        self.commands = t(settings.topic(specs.COMMANDS.name))
        self.events = t(settings.topic(specs.EVENTS.name))
        self.case_jobs = t(settings.topic(specs.CASE_JOBS.name))
        self.case_jobs_dlq = t(settings.topic(specs.CASE_JOBS_DLQ.name))
        self.commands_dlq = t(settings.topic(specs.COMMANDS_DLQ.name))
        # JSON keys and values survive changelog recovery as the str / dict they were.
        schema: faust.Schema = faust.Schema(key_serializer="json", value_serializer="json")
        # Faust requires a table's changelog to match its source topic's partitions.
        self.admin = self.app.Table(
            "admin", default=None, schema=schema, partitions=specs.COMMANDS.partitions
        )
        # Written from every run's partition: the key decides the partition, so recovery
        # never finds two versions of one model's record.
        self.history = self.app.Table(
            "history",
            default=None,
            schema=schema,
            partitions=specs.EVENTS.partitions,
            use_partitioner=True,
        )
        # A run's header and each of its results are separate keys, so one CaseGraded
        # writes one small changelog record instead of the whole run again.
        self.runs = self.app.Table(
            "runs", default=None, schema=schema, partitions=specs.EVENTS.partitions
        )
        self.results = self.app.Table(
            "results", default=None, schema=schema, partitions=specs.EVENTS.partitions
        )
        self.decided = self.app.Table(
            "decided", default=None, schema=schema, partitions=specs.COMMANDS.partitions
        )
        self._progress: dict[str, RunProgress] = {}
        self._run_limits: dict[str, asyncio.Semaphore] = {}
        self._job_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._tasks: set[asyncio.Future[Any]] = set()
        self.app.agent(self.commands, name="commands")(self._commands_agent)
        self.app.agent(self.case_jobs, name="case-jobs")(self._jobs_agent)
        self.app.agent(self.events, name="aggregator")(self._events_agent)

    # ------------------------------------------------------------------ state access
    def admin_state(self) -> AdminState:
        raw = self.admin.get(ADMIN_KEY)
        return AdminState.model_validate(raw) if raw else AdminState()

    def model_history(self) -> dict[str, ModelRecord]:
        return {k: ModelRecord.model_validate(v) for k, v in self.history.items() if v}

    def run_progress(self, run_id: str) -> RunProgress | None:
        # The aggregator is the runs table's single writer, so its parsed copies stay
        # current; the table (changelogged) is read only after a restart.
        cached = self._progress.get(run_id)
        if cached is not None:
            return cached
        header = self.runs.get(run_id)
        if not header:
            return None
        prefix = f"{run_id}{RESULT_SEP}"
        outcomes = {
            k.removeprefix(prefix): v for k, v in self.results.items() if k.startswith(prefix) and v
        }
        progress = RunProgress.model_validate({**header, "outcomes": outcomes})
        self._progress[run_id] = progress
        return progress

    async def send_event(self, event: EventBase) -> None:
        await self.events.send(key=event_key(event).encode(), value=encode_event(event))

    # ------------------------------------------------------------------ commands
    async def _commands_agent(self, stream: Any) -> None:
        async for event in stream.events():
            raw: bytes = event.message.value or b""
            where = f"{event.message.topic}:{event.message.partition}:{event.message.offset}"
            try:
                command = decode_command(raw)
            except DecodeError as e:
                await self._safe_reject(_command_id_of(raw), e.type_name, e.reason, raw, where)
                continue
            try:
                await self._handle_command(command)
            except Exception as e:  # nothing escapes: the command is answered with a reason
                log.exception("command handling failed")
                await self._safe_reject(
                    command.command_id,
                    command.type,
                    f"internal error: {type(e).__name__}: {e}",
                    raw,
                    where,
                )

    async def _handle_command(self, command: Command) -> None:
        now = self.clock()
        earlier = self.decided.get(command.command_id)
        if earlier:
            # A redelivery (or a reused id): send what was decided then, never decide again
            # against state that has moved on. Event ids and job ids make repeats harmless.
            await self._send_decision(
                [decode_event(e.encode()) for e in earlier["events"]],
                [CaseJob.model_validate_json(j) for j in earlier["jobs"]],
            )
            return
        state = self.admin_state()
        outcome = decide_command(
            state,
            self.model_history(),
            command,
            now=now,
            case_ids=self.case_ids,
            credentials=self.credentials,
        )
        for ev in outcome.events:
            state = evolve_admin(state, ev)
        # The decision is saved before it goes out: a crash in between re-sends it on
        # redelivery (see above) instead of deciding the command a second time.
        self.decided[command.command_id] = {
            "events": [encode_event(e).decode() for e in outcome.events],
            "jobs": [j.model_dump_json() for j in outcome.jobs],
        }
        self.admin[ADMIN_KEY] = state.model_dump(mode="json")
        await self._send_decision(list(outcome.events), list(outcome.jobs))

    async def _send_decision(self, events: list[EventBase], jobs: list[CaseJob]) -> None:
        for ev in events:
            await self.send_event(ev)
        for job in jobs:
            await self.case_jobs.send(key=job.job_id.encode(), value=job.model_dump_json().encode())

    async def _safe_reject(
        self, cid: str | None, ctype: str | None, reason: str, raw: bytes, where: str
    ) -> None:
        try:
            await self.send_event(
                reject(
                    cid,
                    ctype,
                    reason[:500],
                    now=self.clock(),
                    raw_excerpt=raw_excerpt(raw),
                    id_basis=where,
                )
            )
            await self.commands_dlq.send(value=raw)
        except Exception:
            log.exception("could not even reject a command")

    # ------------------------------------------------------------------ case jobs
    async def _jobs_agent(self, stream: Any) -> None:
        """Up to `worker_job_slots` jobs run at once, each acked when it is done.

        Acks are released in offset order per partition: faust-streaming 0.15.3 can commit
        past an unacked message when acks arrive out of order (issue 606), so a job that
        finishes early waits for the earlier ones before its ack, never before its work.
        """
        slots = asyncio.Semaphore(self.settings.worker_job_slots)
        inflight: dict[tuple[str, int], collections.deque[list[Any]]] = {}
        manual = stream.noack()
        async for event in manual.events():
            await slots.acquire()
            tp = (event.message.topic, event.message.partition)
            entry: list[Any] = [event, False]
            inflight.setdefault(tp, collections.deque()).append(entry)
            task = asyncio.create_task(self._job_task(event.message.value, slots))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(functools.partial(self._finished, manual, inflight[tp], entry))

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
            ack = asyncio.ensure_future(stream.ack(event))
            self._tasks.add(ack)
            ack.add_done_callback(self._tasks.discard)

    async def _job_task(self, raw: bytes | None, slots: asyncio.Semaphore) -> None:
        try:
            try:
                job = CaseJob.model_validate_json(raw or b"")
            except Exception as e:
                log.error("undecodable case job dead-lettered: %s", e)
                await self._dlq_raw(raw or b"")
                return
            limit = self._run_limits.setdefault(job.run_id, asyncio.Semaphore(job.max_concurrency))
            await self._run_job(job, limit)
        finally:
            slots.release()

    async def _dlq_raw(self, raw: bytes) -> None:
        try:
            await self.case_jobs_dlq.send(value=raw)
        except Exception:
            log.exception("dead-lettering failed")

    async def _run_job(self, job: CaseJob, limit: asyncio.Semaphore) -> None:
        # At-least-once delivery can hand this worker two copies of one job (a redelivery
        # and its retry): they run one after the other, so the second finds the first's
        # results instead of fighting it for the job's container.
        lock = self._job_locks.get(job.job_id)
        if lock is None:
            lock = self._job_locks[job.job_id] = asyncio.Lock()
        async with lock, limit:
            try:
                progress = self.run_progress(job.run_id)
                if progress is not None and progress.completed:
                    return  # a late duplicate of a finished run's job
                done = set(progress.outcomes) if progress else set()
                if all(result_key(job.model, c, job.rep) in done for c in job.case_ids):
                    return  # a redelivered job whose results are all in
                await self.executor.execute(
                    job,
                    self.send_event,
                    frozenset(c for c in job.case_ids if result_key(job.model, c, job.rep) in done),
                )
            except Exception as e:
                await self._job_failed(job, e)

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
                await self.case_jobs.send(
                    key=job.job_id.encode(), value=retry.model_dump_json().encode()
                )
                return
            log.error("job %s dead-lettered after %d attempts: %s", job.job_id, job.attempt, reason)
            await self.case_jobs_dlq.send(
                key=job.job_id.encode(), value=job.model_dump_json().encode()
            )
            await self.send_event(
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

    # ------------------------------------------------------------------ aggregation
    async def _events_agent(self, stream: Any) -> None:
        async for raw in stream:
            try:
                await self._aggregate(raw)
            except Exception:
                log.exception("aggregation failed for one event")

    async def _aggregate(self, raw: bytes) -> None:
        try:
            head = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(head, dict) or head.get("type") not in RUN_EVENT_TYPES:
            return
        event = decode_event(raw)
        run_id: str = event.run_id  # type: ignore[union-attr]
        before = self.run_progress(run_id)
        progress = evolve_run(before, event)
        if progress is before:
            return  # a duplicate: nothing changed
        # Saved before anything else: the fact is never lost, and a crash below leaves the
        # run complete-but-unpublished, which the redelivered event finishes.
        self._save(progress, event)
        if is_complete(progress):
            await self._complete(progress)

    def _save(self, progress: RunProgress, event: EventBase) -> None:
        run_id = progress.run_id
        self._progress[run_id] = progress
        if isinstance(event, CaseGraded):
            key = result_key(event.model, event.case_id, event.rep)
            self.results[f"{run_id}{RESULT_SEP}{key}"] = progress.outcomes[key].model_dump(
                mode="json"
            )
        else:
            self.runs[run_id] = progress.model_dump(mode="json", exclude={"outcomes"})

    async def _complete(self, progress: RunProgress) -> None:
        now = self.clock()
        try:
            events = completion_events(progress, now=now)
            records = measured_records(progress)
        except Exception as e:
            # Deterministic, so retrying cannot help: close the run and say why.
            log.exception("completing run %s failed", progress.run_id)
            events, records = completion_failed(progress, e, now=now), []
        # History before RunCompleted: a client that sees the run done and starts the next
        # one must find these summaries to carry.
        for record in records:
            key = history_key(record.kind, record.model, record.reasoning_effort)
            self.history[key] = record.model_dump(mode="json")
        for ev in events:
            await self.send_event(ev)
        done = progress.model_copy(update={"completed": True, "outcomes": {}})
        self.runs[progress.run_id] = done.model_dump(mode="json", exclude={"outcomes"})
        prefix = f"{progress.run_id}{RESULT_SEP}"
        for key in progress.outcomes:  # the finished run's results leave memory
            with contextlib.suppress(KeyError):
                del self.results[prefix + key]
        self._progress[progress.run_id] = done


def _command_id_of(raw: bytes) -> str | None:
    """The command id of a message that is JSON but not a valid command, so its rejection
    still reaches whoever waits for that id."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    cid = data.get("command_id") if isinstance(data, dict) else None
    return cid if isinstance(cid, str) and 0 < len(cid) <= 200 else None


def run_worker(worker: Worker, loglevel: str = "info") -> None:
    """Run the Faust worker in the foreground until stopped."""
    faust.Worker(worker.app, loglevel=loglevel, quiet=True).execute_from_commandline()
