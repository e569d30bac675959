"""The projected tables as the writer sees them: columns, natural key, parent.

Every table is insert-only and keyed by a natural key, so a duplicate event changes nothing
(`ON CONFLICT DO NOTHING`: the first occurrence in log order wins, as in the worker's own
fold). Child rows are written only when their parent row was inserted by the same batch,
so a re-delivered fact with different details (a regraded case, a re-emitted table) can
never graft new children onto the first version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    parent: str | None = None
    """Table whose freshly inserted rows gate this table's rows (same key columns)."""
    parent_key: tuple[str, ...] = ()
    """This table's columns that hold the parent's key, in the parent's key order."""
    positioned: bool = False
    """Its last columns are LOG_POSITION, appended by the projector (the fold sees only
    the event, not where it sits in the log)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_index", tuple(self.columns.index(c) for c in self.key))

    def key_of(self, row: tuple[object, ...]) -> tuple[object, ...]:
        return tuple(row[i] for i in self.key_index)  # type: ignore[attr-defined]


_SNAPSHOT = (
    "min_accuracy",
    "switch_cost_factor",
    "max_concurrency",
    "classifier_repetitions",
    "decider_repetitions",
    "classifier_max_p95_latency_ms",
    "acceptance",
    "benchmark_identity",
    "decider_harness",
)

LOG_POSITION: Final = ("log_partition", "log_offset")
"""Partition and offset of the event a row comes from: "latest" follows the log, not a clock."""

DECISION_BILLING: Final = ("user_id", "classifier_outcome")
"""The decisions' billing columns (issue 16.10): optional in DecisionMade, so last."""

_CLS = (
    "cls_task_type",
    "cls_subtask_type",
    "cls_reasoning",
    "cls_context",
    "cls_execution_mode",
    "cls_requires_tools",
    "cls_risk",
    "cls_fallback",
    "cls_fallback_reason",
)

TABLES: Final[tuple[TableSpec, ...]] = (
    # Parents before children: the writer goes through this tuple in order.
    TableSpec(
        "benchmark_configs",
        ("config_id", "saved_at", "correlation_id", *_SNAPSHOT, *LOG_POSITION),
        ("config_id",),
        positioned=True,
    ),
    TableSpec(
        "config_classifier_models",
        ("config_id", "position", "model"),
        ("config_id", "position"),
        parent="benchmark_configs",
        parent_key=("config_id",),
    ),
    TableSpec(
        "config_decider_models",
        ("config_id", "position", "model", "reasoning_effort"),
        ("config_id", "position"),
        parent="benchmark_configs",
        parent_key=("config_id",),
    ),
    TableSpec(
        "classifier_overrides",
        ("event_id", "set_at", "model", "correlation_id", *LOG_POSITION),
        ("event_id",),
        positioned=True,
    ),
    TableSpec(
        "command_outcomes",
        (
            "event_id",
            "command_id",
            "command_type",
            "outcome",
            "reason",
            "raw_excerpt",
            "occurred_at",
        ),
        ("event_id",),
    ),
    TableSpec(
        "runs",
        (
            "run_id",
            "kind",
            "force",
            "started_at",
            "dataset_size",
            "correlation_id",
            "event_id",
            *_SNAPSHOT,
            "provider_base_url",
            "sim_latency_scale",
            "classifier_deadline_ms",
        ),
        ("run_id",),
    ),
    TableSpec(
        "run_config_classifier_models",
        ("run_id", "position", "model"),
        ("run_id", "position"),
        parent="runs",
        parent_key=("run_id",),
    ),
    TableSpec(
        "run_config_decider_models",
        ("run_id", "position", "model", "reasoning_effort"),
        ("run_id", "position"),
        parent="runs",
        parent_key=("run_id",),
    ),
    TableSpec(
        "run_models",
        ("run_id", "model", "disposition", "reasoning_effort", "source_run_id", "occurred_at"),
        ("run_id", "model"),
    ),
    TableSpec("run_fanouts", ("run_id", "jobs", "expected_results", "occurred_at"), ("run_id",)),
    TableSpec(
        "case_results",
        (
            "run_id",
            "model",
            "case_id",
            "rep",
            "event_id",
            "kind",
            "tier",
            "score",
            "latency_ms",
            "cost_usd",
            "timed_out",
            "job_id",
            "answer_excerpt",
            "occurred_at",
            *_CLS,
        ),
        ("run_id", "model", "case_id", "rep"),
    ),
    TableSpec(
        "case_result_diagnostics",
        ("run_id", "model", "case_id", "rep", "key", "value"),
        ("run_id", "model", "case_id", "rep", "key"),
        parent="case_results",
        parent_key=("run_id", "model", "case_id", "rep"),
    ),
    TableSpec(
        "dead_lettered_jobs",
        ("run_id", "job_id", "model", "rep", "attempts", "error", "occurred_at"),
        ("run_id", "job_id"),
    ),
    TableSpec(
        "dead_lettered_cases",
        ("run_id", "job_id", "case_id"),
        ("run_id", "job_id", "case_id"),
        parent="dead_lettered_jobs",
        parent_key=("run_id", "job_id"),
    ),
    TableSpec(
        "model_summaries",
        (
            "run_id",
            "model",
            "tier",
            "accuracy",
            "accuracy_lower_bound",
            "graded",
            "avg_cost_usd",
            "p95_latency_ms",
            "timeouts",
            "carried",
            "source_run_id",
            "occurred_at",
            "harness",
        ),
        ("run_id", "model", "tier"),
    ),
    TableSpec(
        "run_completions",
        ("run_id", "graded", "ungraded", "expected", "completed_at", "status", "failure_reason"),
        ("run_id",),
    ),
    TableSpec(
        "routing_tables",
        (
            "version",
            "run_id",
            "published_at",
            "min_accuracy",
            "switch_cost_factor",
            "acceptance",
            "event_id",
            "occurred_at",
            *LOG_POSITION,
        ),
        ("version",),
        positioned=True,
    ),
    TableSpec(
        "routing_table_candidates",
        (
            "version",
            "tier",
            "rank",
            "model",
            "reasoning_effort",
            "accuracy",
            "accuracy_lower_bound",
            "avg_cost_usd",
            "p95_latency_ms",
            "graded",
            "meets_threshold",
            "harness",
        ),
        ("version", "tier", "rank"),
        parent="routing_tables",
        parent_key=("version",),
    ),
    TableSpec("publish_skips", ("run_id", "reason", "occurred_at"), ("run_id",)),
    TableSpec(
        "publish_skip_tiers",
        ("run_id", "tier"),
        ("run_id", "tier"),
        parent="publish_skips",
        parent_key=("run_id",),
    ),
    TableSpec(
        "classifier_winners",
        (
            "run_id",
            "model",
            "accuracy",
            "avg_cost_usd",
            "p95_latency_ms",
            "reason",
            "published_at",
            "event_id",
            *LOG_POSITION,
        ),
        ("run_id",),
        positioned=True,
    ),
    TableSpec(
        "decisions",
        (
            "decision_id",
            "event_id",
            "conversation_id",
            "model",
            "reasoning_effort",
            "tier",
            "sticky",
            "null_reason",
            "classifier_model",
            "classifier_cost_usd",
            "classification_fallback",
            "table_version",
            "latency_ms",
            "decided_at",
            *DECISION_BILLING,
        ),
        ("decision_id",),
    ),
)

TABLE: Final[dict[str, TableSpec]] = {t.name: t for t in TABLES}

POSITIONED: Final[frozenset[str]] = frozenset(t.name for t in TABLES if t.positioned)
"""Tables whose rows carry LOG_POSITION."""

PROJECTED_TABLES: Final[tuple[str, ...]] = tuple(t.name for t in TABLES)
"""Every table folded from events (not the bookkeeping tables)."""

BOOKKEEPING_TABLES: Final[tuple[str, ...]] = ("projection_offsets", "projection_errors")
