"""Folding a run (contracts/run_progress.py): completion by expected count, the completion
events, and a fold that duplicates and reordering cannot change (hypothesis)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.codec import encode_event
from contracts.command_decider import history_key
from contracts.config import BenchmarkConfig, DeciderModel
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
from contracts.ids import case_job_id, case_result_id, derive_id
from contracts.results import ModelSummary
from contracts.run_progress import (
    RunProgress,
    completion_events,
    evolve_run,
    is_complete,
    measured_records,
    run_summaries,
)
from contracts.taxonomy import TIERS

NOW = "2026-06-11T09:30:00.000Z"
LATER = "2026-06-11T10:00:00.000Z"
RUN = "run-1"
MODELS = {"sim/cheap": "low", "sim/mid": "medium", "sim/big": "high"}
CASES = {"c0": "low", "c1": "low", "c2": "medium", "c3": "medium", "c4": "high", "c5": "high"}
COST = {"sim/cheap": 0.001, "sim/mid": 0.01, "sim/big": 0.1}


def config(**kw: Any) -> BenchmarkConfig:
    base: dict[str, Any] = dict(
        classifierModels=tuple(MODELS),
        deciderModels=tuple(DeciderModel(model=m, reasoningEffort=e) for m, e in MODELS.items()),
        minAccuracy=0.5,
        classifierMaxP95LatencyMs=None,
        benchmarkIdentity="bench",
    )
    return BenchmarkConfig(**{**base, **kw})


def header(
    kind: Any = "decider",
    models: Sequence[str] = tuple(MODELS),
    reps: int = 1,
    carried: Sequence[RunModelCarried] = (),
    n_cases: int = len(CASES),
    harness: Any = "builtin",
) -> list[Any]:  # events; Any so `header() + results` type-checks
    evs: list[EventBase] = [
        RunStarted(
            event_id=derive_id("RunStarted", RUN),
            occurred_at=NOW,
            correlation_id="cmd",
            run_id=RUN,
            kind=kind,
            force=False,
            config=config(deciderHarness=harness),
            dataset_size=n_cases,
        )
    ]
    evs += [
        RunModelEnqueued(
            event_id=derive_id("RunModelEnqueued", RUN, m),
            occurred_at=NOW,
            run_id=RUN,
            model=m,
            reasoning_effort=MODELS[m] if kind == "decider" else None,
        )
        for m in models
    ]
    evs += list(carried)
    evs.append(
        CaseJobsFannedOut(
            event_id=derive_id("CaseJobsFannedOut", RUN),
            occurred_at=NOW,
            run_id=RUN,
            jobs=len(models) * reps,
            expected_results=len(models) * n_cases * reps,
        )
    )
    return evs


def graded(
    model: str,
    case: str,
    rep: int = 0,
    score: float = 1.0,
    latency: float = 100.0,
    kind: Any = "decider",
    cost: float | None = -1.0,
) -> CaseGraded:
    return CaseGraded(
        event_id=case_result_id(RUN, model, case, rep),
        occurred_at=NOW,
        run_id=RUN,
        kind=kind,
        model=model,
        case_id=case,
        rep=rep,
        tier=CASES[case],
        score=score,
        latency_ms=latency,
        cost_usd=COST[model] if cost == -1.0 else cost,
        timed_out=False,
        job_id=case_job_id(RUN, model, 0, rep),
    )


def dead(model: str, cases: Sequence[str], rep: int = 0) -> CaseJobDeadLettered:
    job = case_job_id(RUN, model, 0, rep)
    return CaseJobDeadLettered(
        event_id=derive_id("CaseJobDeadLettered", job),
        occurred_at=NOW,
        run_id=RUN,
        job_id=job,
        model=model,
        case_ids=tuple(cases),
        rep=rep,
        attempts=3,
        error="boom",
    )


def fold(events: Iterable[EventBase], progress: RunProgress | None = None) -> RunProgress:
    p = progress
    for e in events:
        p = evolve_run(p, e)
    assert p is not None
    return p


def all_graded(models: Sequence[str] = tuple(MODELS), kind: Any = "decider") -> list[CaseGraded]:
    # cheap: right on low only; mid: low + medium; big: everything.
    rank = {"low": 0, "medium": 1, "high": 2}
    return [
        graded(m, c, score=1.0 if rank[t] <= rank[MODELS[m]] else 0.0, kind=kind)
        for m in models
        for c, t in CASES.items()
    ]


# ---------------------------------------------------------------------------- completion
def test_not_complete_until_every_expected_result_is_in() -> None:
    results = all_graded()
    p = fold(header())
    for e in results[:-1]:
        p = evolve_run(p, e)
        assert not is_complete(p)
    p = evolve_run(p, results[-1])
    assert is_complete(p) and (p.seen, p.graded, p.ungraded) == (18, 18, 0)


@pytest.mark.parametrize(
    ("given_events", "then_complete"),
    [
        ([], False),  # nothing yet
        (all_graded(), False),  # results without RunStarted/fan-out: no expectation yet
    ],
)
def test_no_completion_without_an_expectation(
    given_events: list[EventBase], then_complete: bool
) -> None:
    if given_events:
        assert is_complete(fold(given_events)) is then_complete
    else:
        assert is_complete(RunProgress(run_id=RUN)) is then_complete


def test_results_before_the_header_still_count() -> None:
    p = fold(all_graded() + header())
    assert is_complete(p)


def test_dead_lettered_cases_complete_the_run_ungraded() -> None:
    results = [g for g in all_graded() if g.model != "sim/big"]
    p = fold(header() + results + [dead("sim/big", list(CASES)[:4]), dead("sim/big", ["c4"])])
    assert not is_complete(p)
    p = evolve_run(p, dead("sim/big", ["c5"]))
    assert is_complete(p)
    assert (p.seen, p.graded, p.ungraded) == (18, 12, 6)
    done = completion_events(p, now=LATER)[-1]
    assert isinstance(done, RunCompleted)
    assert (done.expected, done.graded, done.ungraded) == (18, 12, 6)


def test_a_case_graded_then_dead_lettered_counts_once_as_graded() -> None:
    p = fold(header() + all_graded() + [dead("sim/big", ["c4", "c5"])])
    assert (p.seen, p.graded, p.ungraded) == (18, 18, 0)


def test_completed_run_does_not_complete_again() -> None:
    p = fold(header() + all_graded())
    assert is_complete(p)
    p = fold(completion_events(p, now=LATER), p)
    assert p.completed and not is_complete(p)
    assert not is_complete(evolve_run(p, all_graded()[0]))


def test_all_carried_run_completes_on_its_fan_out() -> None:
    carried = [carried_event(m) for m in MODELS]
    p = fold(header(models=(), carried=carried))
    assert p.expected == 0 and is_complete(p)
    evs = completion_events(p, now=LATER)
    assert isinstance(evs[-1], RunCompleted) and evs[-1].expected == 0
    table = next(e for e in evs if isinstance(e, RoutingTablePublished)).table
    assert [c.model for c in table.tiers["low"]] == ["sim/cheap", "sim/mid", "sim/big"]


def carried_event(model: str) -> RunModelCarried:
    summaries = tuple(
        ModelSummary(
            model=model,
            tier=t,
            accuracy=1.0 if t <= MODELS[model] or t == "low" else 0.0,
            accuracy_lower_bound=0.5,
            graded=2,
            avg_cost_usd=COST[model],
            carried=True,
            source_run_id="run-0",
        )
        for t in TIERS
    )
    return RunModelCarried(
        event_id=derive_id("RunModelCarried", RUN, model),
        occurred_at=NOW,
        run_id=RUN,
        model=model,
        reasoning_effort=MODELS[model],
        source_run_id="run-0",
        summaries=summaries,
    )


# ---------------------------------------------------------------------------- completion events
def test_decider_completion_publishes_the_table_then_run_completed() -> None:
    p = fold(header() + all_graded())
    evs = completion_events(p, now=LATER)
    kinds = [type(e).__name__ for e in evs]
    assert kinds == ["ModelSummarized"] * 9 + ["RoutingTablePublished", "RunCompleted"]
    assert all(e.correlation_id == "cmd" for e in evs)
    table = evs[-2].table  # type: ignore[attr-defined]
    assert table.version == RUN and table.published_at == LATER
    firsts = {t: table.tiers[t][0].model for t in TIERS}
    assert firsts == {"low": "sim/cheap", "medium": "sim/mid", "high": "sim/big"}
    ids = [e.event_id for e in evs]
    assert len(set(ids)) == len(ids)
    # derived: deciding completion again (later, on redelivery) reuses every id
    assert ids == [e.event_id for e in completion_events(p, now="2026-06-12T00:00:00.000Z")]


def test_publish_is_skipped_naming_the_empty_tier() -> None:
    # Only low and medium cases were graded (high ones dead-lettered): tier high is empty.
    results = [g for g in all_graded() if g.tier != "high"]
    p = fold(header() + results + [dead(m, ["c4", "c5"]) for m in MODELS])
    evs = completion_events(p, now=LATER)
    skipped = [e for e in evs if isinstance(e, RoutingTablePublishSkipped)]
    assert len(skipped) == 1 and skipped[0].empty_tiers == ("high",)
    assert not [e for e in evs if isinstance(e, RoutingTablePublished)]
    assert isinstance(evs[-1], RunCompleted)


def test_classifier_completion_publishes_the_winner() -> None:
    results = [
        graded(m, c, score=s, kind="classifier")
        for m, s in (("sim/cheap", 0.3), ("sim/mid", 0.8), ("sim/big", 0.95))
        for c in CASES
    ]
    p = fold(header(kind="classifier") + results)
    evs = completion_events(p, now=LATER)
    winner = next(e for e in evs if isinstance(e, ClassifierWinnerPublished)).winner
    assert winner.model == "sim/mid"  # cheapest meeting minAccuracy 0.5
    assert isinstance(evs[-1], RunCompleted) and evs[-1].kind == "classifier"


def test_carried_summaries_join_the_measured_ones() -> None:
    p = fold(
        header(models=("sim/cheap", "sim/mid"), carried=[carried_event("sim/big")])
        + all_graded(("sim/cheap", "sim/mid"))
    )
    assert is_complete(p)
    summaries = run_summaries(p)
    assert {(s.model, s.carried) for s in summaries} == {
        ("sim/cheap", False),
        ("sim/mid", False),
        ("sim/big", True),
    }
    evs = completion_events(p, now=LATER)
    assert sum(isinstance(e, ModelSummarized) for e in evs) == 9
    table = next(e for e in evs if isinstance(e, RoutingTablePublished)).table
    assert table.tiers["high"][0].model == "sim/big"
    # only measured models are recorded for carrying into later runs
    assert [(r.model, r.reasoning_effort, r.run_id) for r in measured_records(p)] == [
        ("sim/cheap", "low", RUN),
        ("sim/mid", "medium", RUN),
    ]


# ---------------------------------------------------------------------------- hypothesis
KEYS = [(m, c, r) for m in MODELS for c in CASES for r in range(2)]


@st.composite
def run_logs(draw: st.DrawFn) -> tuple[list[EventBase], list[EventBase]]:
    """A decider run's events (2 reps) with outcomes drawn per (model, rep) job: graded,
    dead-lettered, or partly graded then dead-lettered. Returns (events, shuffled redelivery
    with duplicates, some re-executions with different measurements)."""
    events: list[EventBase] = header(reps=2)
    for model in MODELS:
        for rep in range(2):
            fate = draw(st.sampled_from(["graded", "dead", "partial"]))
            cases = list(CASES)
            n_graded = {
                "graded": len(cases),
                "dead": 0,
                "partial": draw(st.integers(1, len(cases) - 1)),
            }[fate]
            for c in cases[:n_graded]:
                events.append(
                    graded(
                        model,
                        c,
                        rep,
                        score=draw(st.sampled_from([0.0, 0.5, 1.0])),
                        latency=draw(st.floats(1, 1000)),
                        cost=draw(st.one_of(st.none(), st.floats(0, 1))),
                    )
                )
            if fate != "graded":
                events.append(dead(model, cases, rep))
    redelivered = list(events)
    redelivered += draw(st.lists(st.sampled_from(events), max_size=30))  # duplicates
    redelivered = draw(st.permutations(redelivered))
    # A re-executed case: same derived id, different measurements (a retry after a crash),
    # later on the log than the first result; the first by log order stays.
    results = [e for e in events if isinstance(e, CaseGraded)]
    for e in draw(st.lists(st.sampled_from(results), max_size=3)) if results else ():
        redelivered.append(
            e.model_copy(update={"latency_ms": e.latency_ms + 7.0, "cost_usd": None, "score": 0.0})
        )
    return events, redelivered


def observable(p: RunProgress) -> tuple[Any, ...]:
    return (
        p.seen,
        p.graded,
        p.ungraded,
        p.expected,
        is_complete(p),
        [s.model_dump() for s in run_summaries(p)],
        [encode_event(e) for e in completion_events(p, now=LATER)] if is_complete(p) else None,
        [r.model_dump() for r in measured_records(p)],
    )


@settings(max_examples=150, deadline=None)
@given(run_logs())
def test_duplicates_and_reordering_leave_the_fold_unchanged(
    logs: tuple[list[EventBase], list[EventBase]],
) -> None:
    in_order, redelivered = logs
    assert observable(fold(redelivered)) == observable(fold(in_order))
    assert is_complete(fold(in_order))


@settings(max_examples=100, deadline=None)
@given(st.permutations(all_graded()), st.lists(st.integers(0, 17), max_size=20))
def test_completion_fires_once_on_the_last_new_result(
    results: list[CaseGraded],
    dupes: list[int],
) -> None:
    """Streaming (as the aggregator does): whatever the order and duplicates, completion
    happens exactly once, when the last distinct result arrives, with the same events."""
    stream: list[EventBase] = header() + list(results)
    for i in dupes:  # redeliver some results, somewhere after their first delivery
        stream.insert(len(stream) - i, results[i])
    p: RunProgress | None = None
    fired: list[list[bytes]] = []
    for e in stream:
        p = evolve_run(p, e)
        if is_complete(p):
            evs = completion_events(p, now=LATER)
            fired.append([encode_event(x) for x in evs])
            p = fold(evs, p)
    reference = fold(header() + all_graded())
    assert fired == [[encode_event(x) for x in completion_events(reference, now=LATER)]]


@pytest.mark.parametrize("kind", ["classifier", "decider"])
def test_a_run_whose_completion_fails_is_closed_with_the_reason(kind: str) -> None:
    from contracts.events import RoutingTablePublishSkipped, RunCompleted
    from contracts.run_progress import RunProgress, completion_failed

    p = RunProgress(run_id="r-1", kind=kind, config=config(), expected=10)  # type: ignore[arg-type]
    events = completion_failed(p, ValueError("conflicting summaries"), now=NOW)
    assert isinstance(events[-1], RunCompleted)
    assert (events[-1].graded, events[-1].ungraded, events[-1].expected) == (0, 10, 10)
    skips = [e for e in events if isinstance(e, RoutingTablePublishSkipped)]
    if kind == "decider":
        assert len(skips) == 1 and "conflicting summaries" in skips[0].reason
    else:
        assert not skips


@pytest.mark.parametrize(("first", "second"), [(1.0, 0.0), (0.0, 1.0)])
def test_a_redelivered_result_that_differs_keeps_the_first_by_log_order(
    first: float, second: float
) -> None:
    original = graded("sim/cheap", "c0", score=first, latency=10.0)
    again = graded("sim/cheap", "c0", score=second, latency=99.0, cost=None)
    p = fold([original, again])
    assert fold([original, again, original]) == p
    [kept] = p.outcomes.values()
    assert (kept.score, kept.latency_ms) == (first, 10.0)
    [s] = [s for s in run_summaries(p) if s.model == "sim/cheap"]
    assert (s.accuracy, s.p95_latency_ms) == (first, 10.0)


def test_measured_records_carry_the_dataset_hash_and_repetitions_into_the_key() -> None:
    head = header()
    head[0] = head[0].model_copy(
        update={"dataset_hash": "hash-d", "config": config(deciderRepetitions=3)}
    )
    records = measured_records(fold([*head, *all_graded()]))
    assert records and {(r.dataset_hash, r.repetitions) for r in records} == {("hash-d", 3)}
    r = records[0]
    assert r.key == history_key("decider", r.model, r.reasoning_effort, "hash-d", 3)


def test_a_kilo_run_names_its_harness_on_summaries_records_and_cells() -> None:
    p = fold(header(harness="kilo") + all_graded())
    assert {s.harness for s in run_summaries(p)} == {"kilo"}
    assert {r.harness for r in measured_records(p)} == {"kilo"}
    table = completion_events(p, now=LATER)[-2].table  # type: ignore[attr-defined]
    assert {c.harness for t in TIERS for c in table.tiers[t]} == {"kilo"}


def test_classifier_summaries_name_no_harness() -> None:
    p = fold(header("classifier") + all_graded(kind="classifier"))
    assert {s.harness for s in run_summaries(p)} == {None}


# ---------------------------------------------------------------------------- failed runs
def test_a_run_whose_jobs_were_all_dead_lettered_failed_and_says_why() -> None:
    lost = [dead(m, list(CASES)) for m in MODELS]
    evs = completion_events(fold(header() + lost), now=LATER)
    assert not any(isinstance(e, ModelSummarized | RoutingTablePublished) for e in evs)
    skipped = next(e for e in evs if isinstance(e, RoutingTablePublishSkipped))
    done = evs[-1]
    assert isinstance(done, RunCompleted) and done.status == "failed"
    assert done.graded == 0 and done.ungraded == done.expected
    assert done.failure_reason is not None and skipped.reason == done.failure_reason
    assert done.failure_reason.startswith(f"all {done.expected} expected results were lost")
    assert "last error: boom" in done.failure_reason


@pytest.mark.parametrize(("share", "status"), [(0.5, "completed"), (0.2, "failed")])
def test_a_run_that_lost_more_than_the_configured_share_failed(share: float, status: str) -> None:
    one_lost = [e for e in all_graded() if e.model != "sim/big"] + [dead("sim/big", list(CASES))]
    evs = completion_events(fold(header() + one_lost), now=LATER, max_ungraded_share=share)
    done = evs[-1]
    assert isinstance(done, RunCompleted) and done.status == status
    assert any(isinstance(e, RoutingTablePublished) for e in evs) == (status == "completed")


def test_a_fully_carried_run_measured_nothing_by_design_and_completed() -> None:
    p = fold(header(models=()))
    assert p.expected == 0
    done = completion_events(p, now=LATER, max_ungraded_share=0.0)[-1]
    assert isinstance(done, RunCompleted) and done.status == "completed"


def test_a_classifier_run_picks_its_winner_against_the_deadline_it_measured_under() -> None:
    head = header("classifier")
    slow = MeasurementConditions(provider_base_url="http://sim/v1", classifier_deadline_ms=50)
    head[0] = head[0].model_copy(update={"conditions": slow})
    evs = completion_events(fold([*head, *all_graded(kind="classifier")]), now=LATER)
    winner = next(e for e in evs if isinstance(e, ClassifierWinnerPublished)).winner
    assert winner.reason.endswith("over_decide_deadline")  # every p95 (100 ms) is over 50
