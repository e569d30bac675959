"""The Faust app: topics, tables and three thin agents around contracts' pure functions.

- `commands`  -> decide_command -> events (+ case jobs)            (concurrency 1)
- `case-jobs` -> batches of jobs run concurrently -> CaseGraded      (concurrency 1, batched)
- `events`    -> evolve_run per run -> completion events + publish  (concurrency 1)

Faust acks a message whose handler raised, so no exception escapes an agent: failures become
events, job retries or dead letters. faust-streaming 0.15.3 still commits past in-flight
messages at concurrency > 1 (issue 606), so every agent runs at concurrency 1; job
parallelism comes from taking a batch of jobs and acking it only after all of them finished
(`Stream.take` acks a batch when the loop asks for the next one).

The tables assume one worker process (all partitions local); see README.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import faust
import orjson

from api.settings import Settings
from contracts.admin import (
    ADMIN_KEY,
    AdminState,
    ModelRecord,
    decide_command,
    event_key,
    evolve_admin,
    history_key,
    reject,
)
from contracts.codec import DecodeError, decode_command, decode_event, encode_event
from contracts.commands import Command
from contracts.config import RunKind
from contracts.envelope import EventBase, iso_utc
from contracts.events import CaseGraded, CaseJobDeadLettered, raw_excerpt
from contracts.ids import derive_id
from contracts.jobs import MAX_JOB_ATTEMPTS, CaseJob
from contracts.run_progress import (
    RunProgress,
    completion_events,
    evolve_run,
    is_complete,
    measured_records,
    result_key,
)
from streams import topics as specs

log = logging.getLogger("provenroute.worker")

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


def utc_now() -> str:
    return iso_utc(datetime.now(UTC))


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
        self.history = self.app.Table(
            "history", default=None, schema=schema, partitions=specs.EVENTS.partitions
        )
        self.runs = self.app.Table(
            "runs", default=None, schema=schema, partitions=specs.EVENTS.partitions
        )
        self.handled: set[str] = set()
        self._progress: dict[str, RunProgress] = {}
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
        raw = self.runs.get(run_id)
        return RunProgress.model_validate(raw) if raw else None

    async def send_event(self, event: EventBase) -> None:
        await self.events.send(key=event_key(event).encode(), value=encode_event(event))

    # ------------------------------------------------------------------ commands
    async def _commands_agent(self, stream: Any) -> None:
        async for event in stream.events():
            raw: bytes = event.message.value or b""
            try:
                command = decode_command(raw)
            except DecodeError as e:
                await self._safe_reject(None, e.type_name, e.reason, raw)
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
                )

    async def _handle_command(self, command: Command) -> None:
        now = self.clock()
        if command.command_id in self.handled:
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
        # The state is saved before the events go out; a crash in between re-decides the
        # command on redelivery, and the derived event ids make the repeats harmless.
        self.admin[ADMIN_KEY] = state.model_dump(mode="json")
        for ev in outcome.events:
            await self.send_event(ev)
        for job in outcome.jobs:
            await self.case_jobs.send(key=job.job_id.encode(), value=job.model_dump_json().encode())
        self.handled.add(command.command_id)

    async def _safe_reject(
        self, cid: str | None, ctype: str | None, reason: str, raw: bytes
    ) -> None:
        try:
            await self.send_event(
                reject(cid, ctype, reason[:500], now=self.clock(), raw_excerpt=raw_excerpt(raw))
            )
            await self.commands_dlq.send(value=raw)
        except Exception:
            log.exception("could not even reject a command")

    # ------------------------------------------------------------------ case jobs
    async def _jobs_agent(self, stream: Any) -> None:
        slots = self.settings.worker_job_slots
        async for batch in stream.take(slots, within=0.2):
            jobs: list[CaseJob] = []
            for raw in batch:
                try:
                    jobs.append(CaseJob.model_validate_json(raw))
                except Exception as e:
                    log.error("undecodable case job dead-lettered: %s", e)
                    await self._dlq_raw(raw)
            limits: dict[str, asyncio.Semaphore] = {}
            for job in jobs:
                limits.setdefault(job.run_id, asyncio.Semaphore(job.max_concurrency))
            await asyncio.gather(*(self._run_job(job, limits[job.run_id]) for job in jobs))

    async def _dlq_raw(self, raw: bytes) -> None:
        try:
            await self.case_jobs_dlq.send(value=raw)
        except Exception:
            log.exception("dead-lettering failed")

    async def _run_job(self, job: CaseJob, limit: asyncio.Semaphore) -> None:
        async with limit:
            try:
                done = self._done_keys(job)
                if all(result_key(job.model, c, job.rep) in done for c in job.case_ids):
                    return  # a redelivered job whose results are all in
                await self.executor.execute(
                    job,
                    self.send_event,
                    frozenset(c for c in job.case_ids if result_key(job.model, c, job.rep) in done),
                )
            except Exception as e:
                await self._job_failed(job, e)

    def _done_keys(self, job: CaseJob) -> set[str]:
        progress = self.run_progress(job.run_id)
        return set(progress.outcomes) if progress else set()

    async def _job_failed(self, job: CaseJob, error: Exception) -> None:
        reason = f"{type(error).__name__}: {error}"[:2000]
        try:
            if job.attempt < MAX_JOB_ATTEMPTS:
                log.warning(
                    "job %s attempt %d failed (%s); retrying", job.job_id, job.attempt, reason
                )
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
        progress = evolve_run(self.run_progress(run_id), event)
        if is_complete(progress):
            for ev in completion_events(progress, now=self.clock()):
                await self.send_event(ev)
            for record in measured_records(progress):
                key = history_key(record.kind, record.model, record.reasoning_effort)
                self.history[key] = record.model_dump(mode="json")
            progress = progress.model_copy(update={"completed": True})
        self.runs[run_id] = progress.model_dump(mode="json")
        self._progress[run_id] = progress


def run_worker(worker: Worker, loglevel: str = "info") -> None:
    """Run the Faust worker in the foreground until stopped."""
    faust.Worker(worker.app, loglevel=loglevel, quiet=True).execute_from_commandline()
