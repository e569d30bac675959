"""The aggregator agent: folds each run's events and completes the run once all are in.

It is the single writer of a run's progress (the events topic is keyed by run id, so one
partition, one owner). A run's header and each of its results are separate table keys, so
one CaseGraded writes one small changelog record instead of the whole run again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import faust
import orjson

from contracts.codec import decode_event
from contracts.command_decider import ModelRecord
from contracts.envelope import EventBase
from contracts.events import CaseGraded
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
from streams import topics as specs
from streams.agents.channels import Channels, json_schema

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


class Aggregator:
    """Owns the `runs`, `results` and `history` tables."""

    def __init__(
        self,
        app: faust.App,
        channels: Channels,
        clock: Callable[[], str],
        max_ungraded_share: float = DEFAULT_MAX_UNGRADED_SHARE,
    ) -> None:
        self.channels = channels
        self.clock = clock
        self.max_ungraded_share = max_ungraded_share
        schema = json_schema()
        partitions = specs.EVENTS.partitions
        self.runs = app.Table("runs", default=None, schema=schema, partitions=partitions)
        self.results = app.Table("results", default=None, schema=schema, partitions=partitions)
        # Written from every run's partition: the key decides the partition, so recovery
        # never finds two versions of one model's record.
        self.history = app.Table(
            "history",
            default=None,
            schema=schema,
            partitions=partitions,
            use_partitioner=True,
        )
        self._progress: dict[str, RunProgress] = {}

    # ------------------------------------------------------------------ reads
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

    # ------------------------------------------------------------------ the agent
    async def run(self, stream: Any) -> None:
        async for raw in stream:
            try:
                await self.aggregate(raw)
            except Exception:  # nothing escapes: Faust would ack and drop the event anyway
                log.exception("aggregation failed for one event")

    async def aggregate(self, raw: bytes) -> None:
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
            events = completion_events(
                progress, now=now, max_ungraded_share=self.max_ungraded_share
            )
            records = measured_records(progress)
        except Exception as e:
            # Deterministic, so retrying cannot help: close the run and say why.
            log.exception("completing run %s failed", progress.run_id)
            events, records = completion_failed(progress, e, now=now), []
        # History before RunCompleted: a client that sees the run done and starts the next
        # one must find these summaries to carry.
        for record in records:
            self.history[record.key] = record.model_dump(mode="json")
        for ev in events:
            await self.channels.send_event(ev)
        done = progress.model_copy(update={"completed": True, "outcomes": {}})
        self.runs[progress.run_id] = done.model_dump(mode="json", exclude={"outcomes"})
        prefix = f"{progress.run_id}{RESULT_SEP}"
        for key in progress.outcomes:  # the finished run's results leave memory
            with contextlib.suppress(KeyError):
                del self.results[prefix + key]
        self._progress[progress.run_id] = done
