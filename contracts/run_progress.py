"""Folding a run's events into its progress, and the events that complete it.

The aggregator (single writer of a run's outcome) is a thin shell: `evolve_run` for every
event of the run, then `completion_events` once `is_complete`. Both are idempotent under
duplicate and re-ordered delivery: results are keyed by (model, case, rep), and completion
is `len(seen) == expected`, never a timer.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from contracts.command_decider import ModelRecord
from contracts.config import BenchmarkConfig, HarnessName, RunKind
from contracts.envelope import EventBase
from contracts.events import (
    CaseGraded,
    CaseJobDeadLettered,
    CaseJobsFannedOut,
    ClassifierWinnerPublished,
    ModelSummarized,
    RoutingTablePublished,
    RoutingTablePublishSkipped,
    RunCompleted,
    RunModelCarried,
    RunModelEnqueued,
    RunStarted,
)
from contracts.events.runs import MeasurementConditions
from contracts.ids import derive_id
from contracts.results import CaseOutcome, ModelSummary
from contracts.routing_builder import PublishSkipped, build_routing_table
from contracts.summaries import summarize
from contracts.taxonomy import ReasoningEffort, Tier
from contracts.winner import (
    classifier_stats_from_outcomes,
    classifier_stats_from_summaries,
    pick_classifier_winner,
)


def result_key(model: str, case_id: str, rep: int) -> str:
    return f"{model}\x1f{case_id}\x1f{rep}"


class RunProgress(BaseModel):
    """Everything the aggregator knows of one run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    kind: RunKind | None = None
    config: BenchmarkConfig | None = None
    """The run's config snapshot (from RunStarted)."""
    dataset_hash: str | None = None
    """Content hash of the dataset the run measures (from RunStarted)."""
    conditions: MeasurementConditions | None = None
    """What the run measures under (from RunStarted)."""
    correlation_id: str | None = None
    started_at: str | None = None
    enqueued: dict[str, ReasoningEffort | None] = {}
    carried: dict[str, tuple[ModelSummary, ...]] = {}
    expected: int | None = None
    """From CaseJobsFannedOut; None until it arrives."""
    outcomes: dict[str, CaseOutcome] = {}
    """Graded results by result key; the first by log order of each key."""
    dead: dict[str, str] = {}
    """Result keys lost to dead-lettered jobs -> the job id."""
    last_error: str | None = None
    """The error of the latest dead-lettered job (log order), for a failed run's reason."""
    completed: bool = False

    @property
    def seen(self) -> int:
        return len(self.outcomes.keys() | self.dead.keys())

    @property
    def graded(self) -> int:
        return len(self.outcomes)

    @property
    def ungraded(self) -> int:
        return len(self.dead.keys() - self.outcomes.keys())


def evolve_run(progress: RunProgress | None, event: EventBase) -> RunProgress:
    run_id = getattr(event, "run_id")  # noqa: B009 - every run event has one
    p = progress or RunProgress(run_id=run_id)
    if isinstance(event, RunStarted):
        return p.model_copy(
            update={
                "kind": event.kind,
                "config": event.config,
                "dataset_hash": event.dataset_hash,
                "conditions": event.conditions,
                "correlation_id": event.correlation_id,
                "started_at": event.occurred_at,
            }
        )
    if isinstance(event, RunModelEnqueued):
        return p.model_copy(
            update={"enqueued": {**p.enqueued, event.model: event.reasoning_effort}}
        )
    if isinstance(event, RunModelCarried):
        return p.model_copy(update={"carried": {**p.carried, event.model: event.summaries}})
    if isinstance(event, CaseJobsFannedOut):
        return p.model_copy(update={"expected": event.expected_results})
    if isinstance(event, CaseGraded):
        key = result_key(event.model, event.case_id, event.rep)
        if key in p.outcomes:
            # A redelivered or re-executed case: the first by log order stays (the one rule
            # shared with `dedupe_outcomes` and the projector's case_results).
            return p
        return p.model_copy(update={"outcomes": {**p.outcomes, key: event.to_outcome()}})
    if isinstance(event, CaseJobDeadLettered):
        new = {result_key(event.model, c, event.rep): event.job_id for c in event.case_ids}
        if new.keys() <= p.dead.keys():
            return p  # a redelivery
        return p.model_copy(update={"dead": {**new, **p.dead}, "last_error": event.error})
    if isinstance(event, RunCompleted):
        return p.model_copy(update={"completed": True})
    return p


def is_complete(p: RunProgress) -> bool:
    return (
        not p.completed
        and p.config is not None
        and p.kind is not None
        and p.expected is not None
        and p.seen >= p.expected
    )


def run_harness(p: RunProgress) -> HarnessName | None:
    """The agent harness of a decider run's snapshot (None for classifier runs)."""
    return p.config.deciderHarness if p.config is not None and p.kind == "decider" else None


def _measured(p: RunProgress) -> list[ModelSummary]:
    """This run's own summaries, each naming the harness that measured it."""
    harness = run_harness(p)
    measured = summarize(p.outcomes.values())
    if harness is None:
        return measured
    return [s.model_copy(update={"harness": harness}) for s in measured]


def run_summaries(p: RunProgress) -> list[ModelSummary]:
    """Measured summaries, plus carried ones of models this run did not measure."""
    measured = _measured(p)
    seen = {s.model for s in measured}
    carried = [s for m, group in p.carried.items() if m not in seen for s in group]
    return measured + carried


DEFAULT_MAX_UNGRADED_SHARE = 0.5
"""A run that lost more than this share of its expected results to dead-lettered jobs (or
graded none at all) failed."""


def failure_reason(p: RunProgress, max_ungraded_share: float) -> str | None:
    """Why the run failed, or None when it measured enough to stand on.

    A run that expected nothing (every model carried) measured nothing by design and
    did not fail."""
    expected = p.expected or 0
    ungraded = max(expected - p.graded, 0)
    if expected == 0 or (p.graded > 0 and ungraded <= max_ungraded_share * expected):
        return None
    lost = "all" if p.graded == 0 else f"{ungraded} of"
    last = f"; last error: {p.last_error}" if p.last_error else ""
    return (f"{lost} {expected} expected results were lost to dead-lettered jobs{last}")[:2000]


def completion_events(
    p: RunProgress, *, now: str, max_ungraded_share: float = DEFAULT_MAX_UNGRADED_SHARE
) -> list[EventBase]:
    """ModelSummarized per (model, tier), the publish (or its skip), then RunCompleted.

    A failed run (see `failure_reason`) publishes nothing: the previous table and winner
    stay live, and the decider run's skip names the reason."""
    assert p.config is not None and p.kind is not None and p.expected is not None
    failed = failure_reason(p, max_ungraded_share)
    if failed is not None:
        skipped = [_publish_skipped(p, now, (), failed)] if p.kind == "decider" else []
        return [*skipped, _run_completed(p, now, failed)]
    summaries = run_summaries(p)
    events: list[EventBase] = [
        ModelSummarized(
            event_id=derive_id("ModelSummarized", p.run_id, s.model, s.tier),
            occurred_at=now,
            correlation_id=p.correlation_id,
            run_id=p.run_id,
            summary=s,
        )
        for s in summaries
    ]
    if p.kind == "decider":
        table = build_routing_table(summaries, config=p.config, run_id=p.run_id, published_at=now)
        if isinstance(table, PublishSkipped):
            events.append(_publish_skipped(p, now, table.empty_tiers, table.reason))
        else:
            events.append(
                RoutingTablePublished(
                    event_id=derive_id("RoutingTablePublished", p.run_id),
                    occurred_at=now,
                    correlation_id=p.correlation_id,
                    run_id=p.run_id,
                    table=table,
                )
            )
    else:
        wanted = set(p.config.classifierModels)
        stats = [
            s for s in classifier_stats_from_outcomes(p.outcomes.values()) if s.model in wanted
        ]
        measured = {s.model for s in stats}
        stats += [
            s
            for s in classifier_stats_from_summaries(
                [x for m, group in p.carried.items() if m not in measured for x in group]
            )
            if s.model in wanted
        ]
        winner = pick_classifier_winner(
            stats,
            min_accuracy=p.config.minAccuracy,
            max_p95_latency_ms=p.config.classifierMaxP95LatencyMs,
            run_id=p.run_id,
            decide_deadline_ms=p.conditions.classifier_deadline_ms if p.conditions else None,
        )
        if winner is not None:
            events.append(
                ClassifierWinnerPublished(
                    event_id=derive_id("ClassifierWinnerPublished", p.run_id),
                    occurred_at=now,
                    correlation_id=p.correlation_id,
                    run_id=p.run_id,
                    winner=winner,
                )
            )
    # Last, so a reader that sees RunCompleted has seen the publish too.
    events.append(_run_completed(p, now))
    return events


def _run_completed(p: RunProgress, now: str, failed: str | None = None) -> RunCompleted:
    assert p.kind is not None
    ungraded = max((p.expected or 0) - p.graded, 0)
    return RunCompleted(
        event_id=derive_id("RunCompleted", p.run_id),
        occurred_at=now,
        correlation_id=p.correlation_id,
        run_id=p.run_id,
        kind=p.kind,
        graded=p.graded,
        ungraded=ungraded,
        expected=p.graded + ungraded,
        status="completed" if failed is None else "failed",
        failure_reason=failed,
    )


def _publish_skipped(
    p: RunProgress, now: str, empty_tiers: tuple[Tier, ...], reason: str
) -> RoutingTablePublishSkipped:
    return RoutingTablePublishSkipped(
        event_id=derive_id("RoutingTablePublishSkipped", p.run_id),
        occurred_at=now,
        correlation_id=p.correlation_id,
        run_id=p.run_id,
        empty_tiers=empty_tiers,
        reason=reason,
    )


def completion_failed(p: RunProgress, error: Exception, *, now: str) -> list[EventBase]:
    """Closes a run whose completion could not be computed, saying why (decider runs name it
    in a publish skip; the previous table stays live)."""
    reason = f"completion failed: {type(error).__name__}: {error}"[:1000]
    skipped = [_publish_skipped(p, now, (), reason)] if p.kind == "decider" else []
    return [*skipped, _run_completed(p, now, reason)]


def measured_records(p: RunProgress) -> list[ModelRecord]:
    """The run's measured (not carried) summaries per model, for carrying into later runs."""
    assert p.kind is not None and p.config is not None
    reps = p.config.classifierRepetitions if p.kind == "classifier" else p.config.deciderRepetitions
    # A model that lost cases to dead-lettered jobs was only partly measured: carrying it
    # would freeze the gap into every later run, so it is re-run next time instead.
    lost = {k.split("\x1f", 1)[0] for k in p.dead.keys() - p.outcomes.keys()}
    by_model: dict[str, list[ModelSummary]] = {}
    for s in _measured(p):
        if s.model not in lost:
            by_model.setdefault(s.model, []).append(s)
    return [
        ModelRecord(
            kind=p.kind,
            model=m,
            reasoning_effort=p.enqueued.get(m),
            run_id=p.run_id,
            summaries=tuple(group),
            dataset_hash=p.dataset_hash,
            repetitions=reps,
            harness=run_harness(p),
        )
        for m, group in sorted(by_model.items())
    ]
