"""Events: one instance of each round-trips; envelope and per-event invariants hold."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, get_args

import pytest
from pydantic import BaseModel, ValidationError

from contracts.classification import Classification
from contracts.codec import decode_event, encode_event
from contracts.commands import COMMAND_CLASSES, CommandType
from contracts.config import BenchmarkConfig, DeciderModel
from contracts.envelope import EventBase, iso_utc
from contracts.events import (
    EVENT_CLASSES,
    RAW_EXCERPT_MAX,
    BenchmarkConfigSaved,
    CaseGraded,
    CaseJobDeadLettered,
    CaseJobsFannedOut,
    ClassifierOverrideSet,
    ClassifierWinnerPublished,
    CommandAccepted,
    CommandRejected,
    DecisionMade,
    Event,
    ModelSummarized,
    RoutingTablePublished,
    RoutingTablePublishSkipped,
    RunCompleted,
    RunModelCarried,
    RunModelEnqueued,
    RunStarted,
    raw_excerpt,
)
from contracts.ids import PROVENROUTE_NAMESPACE, case_job_id, case_result_id, derive_id
from contracts.results import CaseOutcome, ModelSummary
from contracts.routing_table import ClassifierWinner, RoutingCandidate, RoutingTable

AT = "2026-06-11T09:30:00.000Z"
RUN = "run-1"
ENV: dict[str, Any] = {"occurred_at": AT, "correlation_id": "cmd-1", "causation_id": "evt-0"}

CONFIG = BenchmarkConfig(
    classifierModels=("sim/classify-mini",),
    deciderModels=(DeciderModel(model="sim/swift-mini", reasoningEffort="low"),),
    minAccuracy=0.8,
    benchmarkIdentity="sim-benchmark",
)
SUMMARY = ModelSummary(
    model="sim/swift-mini",
    tier="low",
    accuracy=0.9,
    accuracy_lower_bound=0.75,
    graded=20,
    avg_cost_usd=0.0012,
    p95_latency_ms=830.5,
)
CANDIDATE = RoutingCandidate(
    model="sim/swift-mini",
    reasoningEffort="low",
    accuracy=0.9,
    accuracyLowerBound=0.75,
    avgCostUsd=0.0012,
    p95LatencyMs=830.5,
    graded=20,
    meetsThreshold=True,
)
TABLE = RoutingTable(
    version=RUN,
    published_at=AT,
    minAccuracy=0.8,
    switchCostFactor=3.0,
    tiers={"low": (CANDIDATE,), "medium": (CANDIDATE,), "high": (CANDIDATE,)},
)
LABEL = Classification(
    taskType="debugging",
    subtaskType="bug_fix",
    reasoningComplexity="medium",
    contextComplexity="low",
    executionMode="single_turn",
    requiresTools=False,
    riskLevel="low",
    fallback=True,
    fallback_reason="missing field riskLevel",
)


def _graded(**changes: Any) -> CaseGraded:
    fields: dict[str, Any] = {
        "run_id": RUN,
        "kind": "classifier",
        "model": "sim/classify-mini",
        "case_id": "debugging-bug_fix-001",
        "rep": 0,
        "tier": "medium",
        "score": 0.0,
        "latency_ms": 412.0,
        "cost_usd": 0.00004,
        "timed_out": False,
        "classification": LABEL,
        "answer_excerpt": '{"taskType": "debugging"',
        "diagnostics": {"fallback_reason": "missing field riskLevel", "stop_reason": "stop"},
        "job_id": case_job_id(RUN, "sim/classify-mini", 0, 0),
        **changes,
    }
    fields.setdefault(
        "event_id",
        case_result_id(fields["run_id"], fields["model"], fields["case_id"], fields["rep"]),
    )
    return CaseGraded(**ENV, **fields)


SAMPLES: list[EventBase] = [
    BenchmarkConfigSaved(event_id="e1", config=CONFIG, **ENV),
    CommandAccepted(event_id="e2", command_type="StartRun", **ENV),
    CommandRejected(
        event_id="e3", command_type=None, reason="not JSON", raw_excerpt="{oops", **ENV
    ),
    ClassifierOverrideSet(event_id="e4", model=None, **ENV),
    RunStarted(
        event_id="e5", run_id=RUN, kind="decider", force=True, config=CONFIG, dataset_size=76, **ENV
    ),
    RunModelEnqueued(
        event_id="e6", run_id=RUN, model="sim/swift-mini", reasoning_effort="low", **ENV
    ),
    RunModelCarried(
        event_id="e7",
        run_id=RUN,
        model="sim/swift-mini",
        reasoning_effort="low",
        source_run_id="run-0",
        summaries=(SUMMARY.model_copy(update={"carried": True, "source_run_id": "run-0"}),),
        **ENV,
    ),
    CaseJobsFannedOut(event_id="e8", run_id=RUN, jobs=16, expected_results=76, **ENV),
    _graded(),
    CaseJobDeadLettered(
        event_id="e10",
        run_id=RUN,
        job_id=case_job_id(RUN, "sim/swift-mini", 3, 0),
        model="sim/swift-mini",
        case_ids=("debugging-bug_fix-001", "debugging-bug_fix-002"),
        rep=0,
        attempts=3,
        error="container exited 137",
        **ENV,
    ),
    ModelSummarized(event_id="e11", run_id=RUN, summary=SUMMARY, **ENV),
    RunCompleted(
        event_id="e12", run_id=RUN, kind="decider", graded=74, ungraded=2, expected=76, **ENV
    ),
    RoutingTablePublished(event_id="e13", run_id=RUN, table=TABLE, **ENV),
    RoutingTablePublishSkipped(
        event_id="e14",
        run_id=RUN,
        empty_tiers=("high",),
        reason="tier high has no candidate",
        **ENV,
    ),
    ClassifierWinnerPublished(
        event_id="e15",
        run_id=RUN,
        winner=ClassifierWinner(
            run_id=RUN,
            model="sim/classify-mini",
            accuracy=0.93,
            avgCostUsd=0.00004,
            p95LatencyMs=700.0,
            reason="cheapest_meeting_all",
        ),
        **ENV,
    ),
    DecisionMade(
        event_id="e16",
        decision_id="d-1",
        conversation_id="conv-1",
        model="sim/swift-mini",
        reasoning_effort="low",
        tier="low",
        sticky=False,
        null_reason=None,
        classifier_model="sim/classify-mini",
        classifier_cost_usd=0.00004,
        classification_fallback=False,
        table_version=RUN,
        latency_ms=3.2,
        **ENV,
    ),
]


def test_samples_cover_every_event_class() -> None:
    union_members = get_args(get_args(Event)[0])
    assert {type(e) for e in SAMPLES} == set(union_members) == set(EVENT_CLASSES.values())
    assert all(EVENT_CLASSES[name].model_fields["type"].default == name for name in EVENT_CLASSES)


def test_command_type_literal_matches_command_classes() -> None:
    assert set(get_args(CommandType)) == set(COMMAND_CLASSES)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_round_trip(event: EventBase) -> None:
    raw = encode_event(event)
    decoded = decode_event(raw)
    assert decoded == event
    assert type(decoded) is type(event)
    assert encode_event(decoded) == raw  # byte-stable: replays and dedupe compare bytes


@pytest.mark.parametrize("cls", list(EVENT_CLASSES.values()), ids=lambda c: c.__name__)
def test_every_field_has_a_docstring(cls: type[BaseModel]) -> None:
    for name, field in cls.model_fields.items():
        assert field.description, f"{cls.__name__}.{name} has no docstring"


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_envelope_is_frozen_and_strict(event: EventBase) -> None:
    with pytest.raises(ValidationError):
        event.event_id = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="Extra inputs"):
        type(event).model_validate({**event.model_dump(), "surprise": 1})
    assert event.schema_version == 1


@pytest.mark.parametrize(
    "stamp", ["2026-06-11T09:30:00+02:00", "2026-06-11T09:30:00", "yesterday", ""]
)
def test_occurred_at_must_be_utc_iso(stamp: str) -> None:
    with pytest.raises(ValidationError, match="occurred_at"):
        CommandAccepted(event_id="e", command_type="StartRun", occurred_at=stamp)


def test_occurred_at_has_no_default_and_is_kept_verbatim() -> None:
    with pytest.raises(ValidationError, match="occurred_at"):
        CommandAccepted.model_validate({"event_id": "e", "command_type": "StartRun"})
    e = CommandAccepted(
        event_id="e", command_type="StartRun", occurred_at="2026-06-11T09:30:00+00:00"
    )
    assert e.occurred_at == "2026-06-11T09:30:00+00:00"


def test_iso_utc() -> None:
    moment = datetime(2026, 6, 11, 11, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert iso_utc(moment) == "2026-06-11T09:30:00.123Z"
    assert iso_utc(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000Z"
    with pytest.raises(ValueError, match="aware"):
        iso_utc(datetime(2026, 1, 1))


def test_derived_ids_are_stable_and_distinct() -> None:
    a = case_result_id(RUN, "sim/m", "case-1", 0)
    assert a == case_result_id(RUN, "sim/m", "case-1", 0)
    assert a == "d01f5d29-2762-5b2e-8bd5-a9998012575f"  # pinned: stored ids depend on the namespace
    assert (
        len(
            {
                a,
                case_result_id(RUN, "sim/m", "case-1", 1),
                case_result_id(RUN, "sim/n", "case-1", 0),
            }
        )
        == 3
    )
    for parts in (("a",), ("x", "y"), ("ü" * 50, "", "z")):
        assert derive_id(*parts) == str(uuid.uuid5(PROVENROUTE_NAMESPACE, "\x1f".join(parts)))
    # The separator keeps part boundaries: ("a:b", "c") is not ("a", "b:c").
    assert derive_id("a:b", "c") != derive_id("a", "b:c")
    with pytest.raises(ValueError):
        derive_id()


def test_case_graded_id_must_be_derived() -> None:
    with pytest.raises(ValidationError, match="case_result_id"):
        _graded(event_id="random")


def test_case_graded_invariants() -> None:
    with pytest.raises(ValidationError, match="decider results carry no classification"):
        _graded(kind="decider")
    with pytest.raises(ValidationError, match="score"):
        _graded(score=1.5)
    with pytest.raises(ValidationError, match="diagnostics"):
        _graded(diagnostics={"tail": "x" * 501})
    with pytest.raises(ValidationError, match="answer_excerpt"):
        _graded(answer_excerpt="x" * 2001)
    with pytest.raises(ValidationError, match="latency_ms"):
        _graded(latency_ms=float("nan"))


def test_case_graded_to_outcome() -> None:
    outcome = _graded(kind="decider", classification=None, score=1.0).to_outcome()
    assert outcome == CaseOutcome(
        model="sim/classify-mini",
        case_id="debugging-bug_fix-001",
        rep=0,
        tier="medium",
        score=1.0,
        latency_ms=412.0,
        cost_usd=0.00004,
        timed_out=False,
    )


@pytest.mark.parametrize(
    ("diagnostic", "post_check_ms"),
    [(None, None), ("1234.5", 1234.5), ("0", 0.0), ("-1", None), ("inf", None), ("x", None)],
)
def test_case_graded_outcome_carries_the_post_check_time(
    diagnostic: str | None, post_check_ms: float | None
) -> None:
    """The executor's post_check_ms diagnostic, what pacing counts beside the latency."""
    diagnostics = {} if diagnostic is None else {"post_check_ms": diagnostic}
    graded = _graded(kind="decider", classification=None, diagnostics=diagnostics)
    assert graded.to_outcome().post_check_ms == post_check_ms


def test_run_completed_must_add_up() -> None:
    with pytest.raises(ValidationError, match="!= expected"):
        RunCompleted(
            event_id="e", run_id=RUN, kind="decider", graded=70, ungraded=2, expected=76, **ENV
        )


def test_fan_out_expects_at_least_one_result_per_job() -> None:
    CaseJobsFannedOut(event_id="e", run_id=RUN, jobs=0, expected_results=0, **ENV)
    with pytest.raises(ValidationError, match="expected_results"):
        CaseJobsFannedOut(event_id="e", run_id=RUN, jobs=5, expected_results=4, **ENV)


def test_carried_summaries_must_be_marked_and_match_model() -> None:
    fields: dict[str, Any] = {
        "event_id": "e",
        "run_id": RUN,
        "model": "sim/swift-mini",
        "reasoning_effort": "low",
        "source_run_id": "run-0",
        **ENV,
    }
    with pytest.raises(ValidationError, match="carried=true"):
        RunModelCarried(summaries=(SUMMARY,), **fields)
    with pytest.raises(ValidationError, match="carried under model"):
        RunModelCarried(
            summaries=(SUMMARY.model_copy(update={"model": "sim/x", "carried": True}),), **fields
        )


def test_published_table_and_winner_belong_to_their_run() -> None:
    with pytest.raises(ValidationError, match=r"table\.version"):
        RoutingTablePublished(event_id="e", run_id="run-2", table=TABLE, **ENV)
    winner = ClassifierWinner(run_id="run-2", model="sim/c", accuracy=0.9, reason="most_accurate")
    with pytest.raises(ValidationError, match=r"winner\.run_id"):
        ClassifierWinnerPublished(event_id="e", run_id=RUN, winner=winner, **ENV)


def _decision(**changes: Any) -> DecisionMade:
    fields: dict[str, Any] = {
        "event_id": "e",
        "decision_id": "d",
        "conversation_id": "c",
        "model": None,
        "reasoning_effort": None,
        "tier": None,
        "sticky": False,
        "null_reason": "no routing table",
        "classifier_model": "sim/classify-mini",
        "classifier_cost_usd": None,
        "classification_fallback": False,
        "table_version": None,
        "latency_ms": 1.0,
        **ENV,
        **changes,
    }
    return DecisionMade(**fields)


def test_decision_is_a_model_or_a_null_reason() -> None:
    assert _decision().model is None
    with pytest.raises(ValidationError, match="exactly one"):
        _decision(null_reason=None)
    with pytest.raises(ValidationError, match="exactly one"):
        _decision(model="sim/swift-mini")
    with pytest.raises(ValidationError, match="not sticky"):
        _decision(sticky=True)


def test_command_rejected_excerpt() -> None:
    raw = b"\xff" + b"x" * 1000
    excerpt = raw_excerpt(raw)
    assert len(excerpt) == RAW_EXCERPT_MAX and excerpt.startswith("\ufffd")
    with pytest.raises(ValidationError, match="raw_excerpt"):
        CommandRejected(event_id="e", command_type=None, reason="r", raw_excerpt="x" * 501, **ENV)
