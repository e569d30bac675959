"""Events -> rows: pure folding functions, one per event type (no IO, no clock).

`fold(event)` returns the rows an event contributes, as `(table, row)` pairs whose tuples
follow `projections.tables.TABLE[table].columns`. An event type without a folder is
ignored (its offset still advances). Timestamps stay ISO strings; PostgreSQL parses them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from contracts.config import BenchmarkConfig
from contracts.envelope import EventBase
from contracts.events import (
    BenchmarkConfigSaved,
    CaseGraded,
    CaseJobDeadLettered,
    CaseJobsFannedOut,
    ClassifierOverrideSet,
    ClassifierWinnerPublished,
    CommandAccepted,
    CommandRejected,
    DecisionMade,
    ModelSummarized,
    RoutingTablePublished,
    RoutingTablePublishSkipped,
    RunCompleted,
    RunModelCarried,
    RunModelEnqueued,
    RunStarted,
)
from contracts.taxonomy import TIERS

Row = tuple[str, tuple[Any, ...]]
"""(table name, values in the table's column order)."""


def _snapshot(c: BenchmarkConfig) -> tuple[Any, ...]:
    return (
        c.minAccuracy,
        c.switchCostFactor,
        c.maxConcurrency,
        c.classifierRepetitions,
        c.deciderRepetitions,
        c.classifierMaxP95LatencyMs,
        c.acceptance,
        c.benchmarkIdentity,
        c.deciderHarness,
    )


def _model_lists(
    c: BenchmarkConfig, key: str, classifier_table: str, decider_table: str
) -> list[Row]:
    """The config's classifier and decider model lists, in order, keyed by `key`."""
    rows: list[Row] = [(classifier_table, (key, i, m)) for i, m in enumerate(c.classifierModels)]
    rows += [
        (decider_table, (key, i, d.model, d.reasoningEffort)) for i, d in enumerate(c.deciderModels)
    ]
    return rows


def _config_saved(e: BenchmarkConfigSaved) -> list[Row]:
    c = e.config
    rows: list[Row] = [
        ("benchmark_configs", (e.event_id, e.occurred_at, e.correlation_id, *_snapshot(c)))
    ]
    return rows + _model_lists(c, e.event_id, "config_classifier_models", "config_decider_models")


def _override(e: ClassifierOverrideSet) -> list[Row]:
    return [("classifier_overrides", (e.event_id, e.occurred_at, e.model, e.correlation_id))]


def _accepted(e: CommandAccepted) -> list[Row]:
    return [
        (
            "command_outcomes",
            (e.event_id, e.correlation_id, e.command_type, "accepted", None, None, e.occurred_at),
        )
    ]


def _rejected(e: CommandRejected) -> list[Row]:
    return [
        (
            "command_outcomes",
            (
                e.event_id,
                e.correlation_id,
                e.command_type,
                "rejected",
                e.reason,
                e.raw_excerpt,
                e.occurred_at,
            ),
        )
    ]


def _run_started(e: RunStarted) -> list[Row]:
    c = e.config
    rows: list[Row] = [
        (
            "runs",
            (
                e.run_id,
                e.kind,
                e.force,
                e.occurred_at,
                e.dataset_size,
                e.correlation_id,
                e.event_id,
                *_snapshot(c),
                *(
                    (m.provider_base_url, m.simulated_latency_scale, m.classifier_deadline_ms)
                    if (m := e.conditions) is not None
                    else (None, None, None)
                ),
            ),
        )
    ]
    return rows + _model_lists(
        c, e.run_id, "run_config_classifier_models", "run_config_decider_models"
    )


def _enqueued(e: RunModelEnqueued) -> list[Row]:
    return [
        ("run_models", (e.run_id, e.model, "enqueued", e.reasoning_effort, None, e.occurred_at))
    ]


def _carried(e: RunModelCarried) -> list[Row]:
    # The carried summaries themselves arrive as ModelSummarized(carried=True) at completion.
    return [
        (
            "run_models",
            (e.run_id, e.model, "carried", e.reasoning_effort, e.source_run_id, e.occurred_at),
        )
    ]


def _fanned_out(e: CaseJobsFannedOut) -> list[Row]:
    return [("run_fanouts", (e.run_id, e.jobs, e.expected_results, e.occurred_at))]


def _graded(e: CaseGraded) -> list[Row]:
    c = e.classification
    cls: tuple[Any, ...] = (
        (
            c.taskType,
            c.subtaskType,
            c.reasoningComplexity,
            c.contextComplexity,
            c.executionMode,
            c.requiresTools,
            c.riskLevel,
            c.fallback,
            c.fallback_reason,
        )
        if c is not None
        else (None,) * 9
    )
    rows: list[Row] = [
        (
            "case_results",
            (
                e.run_id,
                e.model,
                e.case_id,
                e.rep,
                e.event_id,
                e.kind,
                e.tier,
                e.score,
                e.latency_ms,
                e.cost_usd,
                e.timed_out,
                e.job_id,
                e.answer_excerpt,
                e.occurred_at,
                *cls,
            ),
        )
    ]
    if e.diagnostics:
        rows += [
            ("case_result_diagnostics", (e.run_id, e.model, e.case_id, e.rep, k, v))
            for k, v in e.diagnostics.items()
        ]
    return rows


def _dead_lettered(e: CaseJobDeadLettered) -> list[Row]:
    rows: list[Row] = [
        (
            "dead_lettered_jobs",
            (e.run_id, e.job_id, e.model, e.rep, e.attempts, e.error, e.occurred_at),
        )
    ]
    rows += [("dead_lettered_cases", (e.run_id, e.job_id, c)) for c in dict.fromkeys(e.case_ids)]
    return rows


def _summarized(e: ModelSummarized) -> list[Row]:
    s = e.summary
    return [
        (
            "model_summaries",
            (
                e.run_id,
                s.model,
                s.tier,
                s.accuracy,
                s.accuracy_lower_bound,
                s.graded,
                s.avg_cost_usd,
                s.p95_latency_ms,
                s.timeouts,
                s.carried,
                s.source_run_id,
                e.occurred_at,
                s.harness,
            ),
        )
    ]


def _completed(e: RunCompleted) -> list[Row]:
    return [
        (
            "run_completions",
            (
                e.run_id,
                e.graded,
                e.ungraded,
                e.expected,
                e.occurred_at,
                e.status,
                e.failure_reason,
            ),
        )
    ]


def _published(e: RoutingTablePublished) -> list[Row]:
    t = e.table
    rows: list[Row] = [
        (
            "routing_tables",
            (
                t.version,
                e.run_id,
                t.published_at,
                t.minAccuracy,
                t.switchCostFactor,
                t.acceptance,
                e.event_id,
                e.occurred_at,
            ),
        )
    ]
    for tier in TIERS:
        for rank, c in enumerate(t.tiers.get(tier, ()), start=1):
            rows.append(
                (
                    "routing_table_candidates",
                    (
                        t.version,
                        tier,
                        rank,
                        c.model,
                        c.reasoningEffort,
                        c.accuracy,
                        c.accuracyLowerBound,
                        c.avgCostUsd,
                        c.p95LatencyMs,
                        c.graded,
                        c.meetsThreshold,
                        c.harness,
                    ),
                )
            )
    return rows


def _skipped(e: RoutingTablePublishSkipped) -> list[Row]:
    rows: list[Row] = [("publish_skips", (e.run_id, e.reason, e.occurred_at))]
    rows += [("publish_skip_tiers", (e.run_id, t)) for t in dict.fromkeys(e.empty_tiers)]
    return rows


def _winner(e: ClassifierWinnerPublished) -> list[Row]:
    w = e.winner
    return [
        (
            "classifier_winners",
            (
                e.run_id,
                w.model,
                w.accuracy,
                w.avgCostUsd,
                w.p95LatencyMs,
                w.reason,
                e.occurred_at,
                e.event_id,
            ),
        )
    ]


def _decision(e: DecisionMade) -> list[Row]:
    return [
        (
            "decisions",
            (
                e.decision_id,
                e.event_id,
                e.conversation_id,
                e.model,
                e.reasoning_effort,
                e.tier,
                e.sticky,
                e.null_reason,
                e.classifier_model,
                e.classifier_cost_usd,
                e.classification_fallback,
                e.table_version,
                e.latency_ms,
                e.occurred_at,
                e.user_id,
                e.classifier_outcome,
            ),
        )
    ]


FOLDERS: Final[dict[type[EventBase], Callable[[Any], list[Row]]]] = {
    BenchmarkConfigSaved: _config_saved,
    ClassifierOverrideSet: _override,
    CommandAccepted: _accepted,
    CommandRejected: _rejected,
    RunStarted: _run_started,
    RunModelEnqueued: _enqueued,
    RunModelCarried: _carried,
    CaseJobsFannedOut: _fanned_out,
    CaseGraded: _graded,
    CaseJobDeadLettered: _dead_lettered,
    ModelSummarized: _summarized,
    RunCompleted: _completed,
    RoutingTablePublished: _published,
    RoutingTablePublishSkipped: _skipped,
    ClassifierWinnerPublished: _winner,
    DecisionMade: _decision,
}
"""Folder per event class. Classes missing here are ignored by the projector."""


def fold(event: EventBase) -> list[Row]:
    """The rows `event` contributes to the projections (empty when it is ignored)."""
    folder = FOLDERS.get(type(event))
    return folder(event) if folder is not None else []
