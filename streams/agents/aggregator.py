"""The aggregator agent: folds each run's events, paces its jobs, completes the run.

It is the single writer of a run's progress (the events topic is keyed by run id, so one
partition, one owner). A run's header and each of its results are separate table keys, so
one CaseGraded writes one small changelog record instead of the whole run again.

Pacing (a run's maxConcurrency across every worker): the run's owner releases the run's
jobs onto the job topic itself, at most maxConcurrency unfinished at once, and releases
the next as results come in, longest expected first (`contracts.admission`). No lease or
semaphore shared between processes is needed: the count derives from the results this
agent folds anyway, in the one place that sees all of them, and a worker crash cannot leak
a slot.

Completion cannot be lost: it is checked after every event, duplicates included (a
redelivered last result finishes a run whose completion a crash interrupted), and a
periodic sweep (a tick per partition on the co-partitioned `run-ticks` topic) re-checks
every unfinished run, so a failed send of RunCompleted is retried and a run left
complete-but-unannounced by a crash is finished after a restart. RunCompleted is marked
sent only once the broker has acknowledged it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import faust
import orjson
from aiokafka.partitioner import murmur2

from contracts.admission import (
    admit,
    decode_released,
    encode_released,
    job_finished,
    open_jobs_of,
    run_plan,
)
from contracts.codec import decode_event
from contracts.config import RunKind
from contracts.envelope import EventBase
from contracts.events import CaseGraded, CaseJobDeadLettered, RunCompleted
from contracts.jobs import CaseJob
from contracts.run_progress import (
    DEFAULT_MAX_UNGRADED_SHARE,
    RunProgress,
    completion_events,
    completion_failed,
    evolve_run,
    is_complete,
    measured_records,
    result_key,
)
from streams import faults
from streams import topics as specs
from streams.agents.channels import Channels, delivered, json_schema
from streams.agents.in_hand import InHand

log = logging.getLogger("provenroute.worker")

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


class _Pacing:
    """A run's plan and which of its jobs were released (rebuilt from tables after a restart)."""

    def __init__(
        self, plan: list[CaseJob], released: frozenset[int], open_jobs: frozenset[int]
    ) -> None:
        self.plan = plan
        self.released = released
        self.open_jobs = open_jobs


def events_partition(run_id: str, partitions: int = specs.EVENTS.partitions) -> int:
    """The events partition of a run: what the producer's default partitioner picks for
    the run-id key (Kafka's murmur2), so a sweep finds the runs a partition holds."""
    return (murmur2(run_id.encode()) & 0x7FFFFFFF) % partitions


DEFAULT_STALL_RESEND_S = 60.0
"""A run with no result for this long re-sends its open jobs that no live worker holds."""


class JobHolders(Protocol):
    """Which live worker holds a job (streams.heartbeats.HeartbeatBoard)."""

    ready: asyncio.Event

    async def sync(self) -> None: ...
    def claim_holder(self, job_id: str) -> str | None: ...


class Aggregator:
    """Owns the `runs`, `results` and `released` tables (all co-partitioned with events)."""

    def __init__(
        self,
        app: faust.App,
        channels: Channels,
        clock: Callable[[], str],
        case_ids: Mapping[RunKind, Sequence[str]],
        max_ungraded_share: float = DEFAULT_MAX_UNGRADED_SHARE,
        holders: JobHolders | None = None,
        stall_resend_s: float = DEFAULT_STALL_RESEND_S,
    ) -> None:
        self.holders = holders
        self.stall_resend_s = stall_resend_s
        self._last_result: dict[str, float] = {}
        """Run id -> when its last result arrived here (monotonic), for `_resend_stalled`."""
        self.app = app
        self.channels = channels
        self.clock = clock
        self.case_ids = case_ids
        self.max_ungraded_share = max_ungraded_share
        schema = json_schema()
        partitions = specs.EVENTS.partitions
        self.runs = app.Table("runs", default=None, schema=schema, partitions=partitions)
        self.results = app.Table("results", default=None, schema=schema, partitions=partitions)
        self.released = app.Table("released", default=None, schema=schema, partitions=partitions)
        self._progress: dict[str, RunProgress] = {}
        self._pacing: dict[str, _Pacing] = {}
        self.in_hand = InHand()

    def forget_cached(self) -> None:
        """After a rebalance another worker may have moved a run on: re-read the tables."""
        self._progress.clear()
        self._pacing.clear()
        self._last_result.clear()

    # ------------------------------------------------------------------ reads
    def run_progress(self, run_id: str) -> RunProgress | None:
        # The aggregator is the runs table's single writer, so its parsed copies stay
        # current; the table (changelogged) is read only after a restart or rebalance.
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

    # ------------------------------------------------------------------ the agent
    async def run(self, stream: Any) -> None:
        ticks = self.channels.run_ticks.get_topic_name()
        async for event in stream.events():
            with self.in_hand.holding():
                try:
                    if event.message.topic == ticks:
                        await self.sweep(event.message.partition)
                    else:
                        await self.aggregate(event.message.value)
                except Exception:  # nothing escapes: the sweep retries what failed here
                    log.exception("aggregation failed for one event")

    async def aggregate(self, raw: bytes | None) -> None:
        try:
            head = orjson.loads(raw or b"")
        except orjson.JSONDecodeError:
            return
        if not isinstance(head, dict) or head.get("type") not in RUN_EVENT_TYPES:
            return
        event = decode_event(raw or b"")
        run_id: str = event.run_id  # type: ignore[union-attr]
        before = self.run_progress(run_id)
        progress = evolve_run(before, event)
        if progress is not before:
            if isinstance(event, CaseGraded | CaseJobDeadLettered):
                self._last_result[run_id] = time.monotonic()
            # Saved before anything else: the fact is never lost, and a crash below leaves
            # the run complete-but-unannounced, which a redelivery or the sweep finishes.
            self._save(progress, event)
            if faults.armed(faults.EXIT_AFTER_LAST_RESULT_SAVED) and is_complete(progress):
                await self.app.producer.flush()  # the saved result is on the changelog
                faults.crash_here(faults.EXIT_AFTER_LAST_RESULT_SAVED)
        # Also for duplicates: a redelivered event may be all a crashed completion gets.
        await self._advance(progress)

    async def sweep(self, partition: int) -> None:
        """Move on every unfinished run of this events partition (complete or release)."""
        for run_id, header in list(self.runs.items()):
            if not header or header.get("completed") or events_partition(run_id) != partition:
                continue
            progress = self.run_progress(run_id)
            if progress is not None:
                await self._advance(progress)
                await self._resend_stalled(progress)

    async def _resend_stalled(self, p: RunProgress) -> None:
        """Re-send a stalled run's open jobs that no live worker holds.

        A released job whose message no worker ever ran (seen once in the two-worker kill
        test: a run waited on one job that appears in no worker's log) would hold its run
        forever. Nothing is lost by sending it again: a copy that finds the attempt handled,
        or held by a live worker, steps aside (the job fence), and results dedupe by key.
        """
        if p.completed or self.holders is None or not self.holders.ready.is_set():
            return
        now = time.monotonic()
        last = self._last_result.setdefault(p.run_id, now)
        if now - last < self.stall_resend_s:
            return
        pacing = self._pacing_of(p)
        stalled = [
            pacing.plan[i] for i in sorted(pacing.open_jobs) if not job_finished(p, pacing.plan[i])
        ]
        if not stalled:
            return
        await self.holders.sync()
        lost = [job for job in stalled if self.holders.claim_holder(job.job_id) is None]
        self._last_result[p.run_id] = now
        for job in lost:
            log.warning(
                "run %s: job %s open %.0f s, no result, no worker holds it: re-sending it",
                p.run_id,
                job.job_id,
                now - last,
            )
            await delivered(
                await self.channels.case_jobs.send(
                    key=job.job_id.encode(), value=job.model_dump_json().encode()
                )
            )

    async def _advance(self, progress: RunProgress) -> None:
        if progress.completed:
            return
        if is_complete(progress):
            await self._complete(progress)
        else:
            await self._release(progress)

    # ------------------------------------------------------------------ pacing
    def _pacing_of(self, p: RunProgress) -> _Pacing:
        pacing = self._pacing.get(p.run_id)
        if pacing is None or not pacing.plan:
            plan = run_plan(p, self.case_ids.get(p.kind, ())) if p.kind else []
            released = decode_released(self.released.get(p.run_id))
            pacing = _Pacing(plan, released, open_jobs_of(p, plan, released))
            self._pacing[p.run_id] = pacing
        return pacing

    async def _release(self, p: RunProgress) -> None:
        pacing = self._pacing_of(p)
        if not pacing.plan:
            return
        released, open_jobs, send = admit(p, pacing.plan, pacing.released, pacing.open_jobs)
        # Sent together, all acked before the release is recorded: a crash re-sends a job
        # (or releases another one of the same run), never skips one.
        pending = []
        for i in send:
            job = pacing.plan[i]
            pending.append(
                await self.channels.case_jobs.send(
                    key=job.job_id.encode(), value=job.model_dump_json().encode()
                )
            )
        for fut in pending:
            await delivered(fut)
        if released != pacing.released:
            self.released[p.run_id] = encode_released(released)
        pacing.released, pacing.open_jobs = released, open_jobs
        if send:
            # Which jobs went out, and where: a run that stalls shows its last release here.
            log.info(
                "run %s: released %s (%d open of %d planned)",
                p.run_id,
                ", ".join(
                    _where(pacing.plan[i].job_id, fut) for i, fut in zip(send, pending, strict=True)
                ),
                len(open_jobs),
                len(pacing.plan),
            )

    # ------------------------------------------------------------------ state
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
        self._last_result.pop(progress.run_id, None)  # a finished run cannot stall
        now = self.clock()
        try:
            events = completion_events(
                progress, now=now, max_ungraded_share=self.max_ungraded_share
            )
            records = measured_records(progress)
        except Exception as e:
            # Deterministic, so retrying cannot help: close the run and say why.
            log.exception("completing run %s failed", progress.run_id)
            events, records = completion_failed(progress, e, now=now), []
        # History acked before RunCompleted: a client that sees the run done and starts the
        # next one must find these summaries to carry (see streams.history).
        for record in records:
            key = record.key
            await delivered(
                await self.channels.model_history.send(
                    key=key.encode(), value=record.model_dump_json().encode()
                )
            )
        *publish, completed = events
        assert isinstance(completed, RunCompleted)
        for ev in publish:
            await self.channels.send_event(ev)
        faults.fail_once(faults.FAIL_RUN_COMPLETED_SEND_ONCE)
        await self.channels.deliver_event(completed)
        done = progress.model_copy(update={"completed": True, "outcomes": {}})
        self.runs[progress.run_id] = done.model_dump(mode="json", exclude={"outcomes"})
        prefix = f"{progress.run_id}{RESULT_SEP}"
        for key in progress.outcomes:  # the finished run's results leave memory
            with contextlib.suppress(KeyError):
                del self.results[prefix + key]
        self._progress[progress.run_id] = done
        self._pacing.pop(progress.run_id, None)


def _where(job_id: str, sent: Any) -> str:
    """`model:chunk:rep@partition` of a sent job (its run id is in the line already)."""
    short = job_id.split(":", 1)[-1]
    try:
        return f"{short}@{sent.result().partition}"
    except Exception:  # no partition known: the job id alone still says which
        return short
