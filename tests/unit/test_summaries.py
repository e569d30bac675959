"""Summaries of graded outcomes (contracts/summaries.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.results import CaseOutcome, ModelSummary
from contracts.summaries import (
    carry_summaries,
    dedupe_outcomes,
    meets_accuracy,
    nearest_rank,
    nearest_rank_p95,
    summarize,
    wilson_lower_bound,
)
from contracts.taxonomy import TIERS


def out(
    model: str = "sim/a",
    case: str = "c1",
    rep: int = 0,
    tier: str = "low",
    score: float = 1.0,
    latency: float = 100.0,
    cost: float | None = 0.01,
    timed_out: bool = False,
) -> CaseOutcome:
    return CaseOutcome(
        model=model,
        case_id=case,
        rep=rep,
        tier=tier,  # type: ignore[arg-type]
        score=score,
        latency_ms=latency,
        cost_usd=cost,
        timed_out=timed_out,
    )


# --- nearest_rank_p95 --------------------------------------------------------------------

P95_CASES = [
    ("empty", [], None),
    ("single", [7.0], 7.0),
    ("two values: rank 2", [1.0, 2.0], 2.0),
    ("1..10: rank ceil(9.5)=10", list(range(1, 11)), 10.0),
    ("1..19: rank ceil(18.05)=19", list(range(1, 20)), 19.0),
    ("1..20: rank exactly 19", list(range(1, 21)), 19.0),
    ("1..21: rank ceil(19.95)=20", list(range(1, 22)), 20.0),
    ("1..100: rank exactly 95", list(range(1, 101)), 95.0),
    ("1..101: rank ceil(95.95)=96", list(range(1, 102)), 96.0),
    ("unsorted input", [50.0, 10.0, 30.0, 20.0, 40.0], 50.0),
    ("ties", [5.0, 5.0, 5.0, 1.0], 5.0),
    ("one outlier in 20", [1.0] * 19 + [1000.0], 1.0),
    ("two outliers in 20", [1.0] * 18 + [1000.0, 2000.0], 1000.0),
]


@pytest.mark.parametrize(("name", "values", "expected"), P95_CASES, ids=[c[0] for c in P95_CASES])
def test_nearest_rank_p95(name: str, values: list[float], expected: float | None) -> None:
    assert nearest_rank_p95(values) == expected


def test_nearest_rank_p95_accepts_generators_and_returns_float() -> None:
    result = nearest_rank_p95(x for x in [3, 1, 2])
    assert result == 3.0 and isinstance(result, float)


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=200))
def test_p95_is_a_member_with_nearest_rank_property(values: list[float]) -> None:
    p = nearest_rank_p95(values)
    assert p in values
    n = len(values)
    assert sum(1 for v in values if v <= p) >= math.ceil(0.95 * n - 1e-9)
    assert sum(1 for v in values if v < p) < math.ceil(0.95 * n - 1e-9)


def test_nearest_rank_rejects_bad_percent() -> None:
    with pytest.raises(ValueError):
        nearest_rank([1.0], 0)
    with pytest.raises(ValueError):
        nearest_rank([1.0], 101)
    assert nearest_rank([3.0, 1.0, 2.0], 100) == 3.0
    assert nearest_rank([3.0, 1.0, 2.0], 50) == 2.0


# --- wilson_lower_bound ------------------------------------------------------------------

WILSON_CASES = [
    ("n == 0", 0.0, 0, 0.0),
    ("no successes", 0.0, 10, 0.0),
    ("all of 10", 10.0, 10, 0.7224672),
    ("half of 100", 50.0, 100, 0.4038315),
    ("fractional successes", 7.5, 10, 0.4421814),
    ("90 of 100", 90.0, 100, 0.8256343),
]


@pytest.mark.parametrize(
    ("name", "successes", "n", "expected"), WILSON_CASES, ids=[c[0] for c in WILSON_CASES]
)
def test_wilson_lower_bound(name: str, successes: float, n: int, expected: float) -> None:
    assert wilson_lower_bound(successes, n) == pytest.approx(expected, abs=1e-6)


def _wilson_reference(k: float, n: int, z: float) -> float:
    p = k / n
    return (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (
        1 + z * z / n
    )


def test_wilson_uses_two_sided_z() -> None:
    # two-sided 95% -> z = 1.959964; 90% -> z = 1.644854
    assert wilson_lower_bound(8, 10) == pytest.approx(_wilson_reference(8, 10, 1.959964), 1e-6)
    assert wilson_lower_bound(8, 10, 0.90) == pytest.approx(
        _wilson_reference(8, 10, 1.644854), 1e-6
    )
    assert (
        wilson_lower_bound(8, 10, 0.99)
        < wilson_lower_bound(8, 10)
        < wilson_lower_bound(8, 10, 0.90)
    )


@pytest.mark.parametrize(
    ("successes", "n", "confidence"),
    [(1.0, -1, 0.95), (-1.0, 5, 0.95), (6.0, 5, 0.95), (1.0, 5, 0.0), (1.0, 5, 1.0)],
)
def test_wilson_rejects_bad_input(successes: float, n: int, confidence: float) -> None:
    with pytest.raises(ValueError):
        wilson_lower_bound(successes, n, confidence)


@given(st.integers(1, 500), st.data())
def test_wilson_bounds_and_monotonicity(n: int, data: st.DataObject) -> None:
    k = data.draw(st.floats(0, n))
    lb = wilson_lower_bound(k, n)
    assert 0.0 <= lb <= k / n + 1e-12
    k2 = data.draw(st.floats(k, n))
    assert wilson_lower_bound(k2, n) >= lb - 1e-12
    # More evidence for the same rate tightens the bound.
    assert wilson_lower_bound(2 * k, 2 * n) >= lb - 1e-12


def test_meets_accuracy_tolerates_float_noise_only() -> None:
    assert meets_accuracy(0.7, 0.7)
    assert meets_accuracy(0.6999999999999999, 0.7)
    assert not meets_accuracy(0.699, 0.7)


# --- summarize ---------------------------------------------------------------------------


def test_summarize_per_model_and_tier() -> None:
    outcomes = [
        out("sim/b", "c1", tier="high", score=1.0, latency=10, cost=0.02),
        out("sim/a", "c1", tier="low", score=1.0, latency=10, cost=0.01),
        out("sim/a", "c2", tier="low", score=0.0, latency=30, cost=0.03),
        out("sim/a", "c3", tier="medium", score=0.5, latency=20, cost=None),
        out("sim/a", "c4", tier="medium", score=1.0, latency=40, cost=None, timed_out=False),
        out("sim/a", "c5", tier="medium", score=0.0, latency=900, cost=0.05, timed_out=True),
    ]
    summaries = summarize(outcomes)
    assert [(s.model, s.tier) for s in summaries] == [
        ("sim/a", "low"),
        ("sim/a", "medium"),
        ("sim/b", "high"),
    ]
    low, medium, high = summaries
    assert (low.accuracy, low.graded, low.avg_cost_usd, low.p95_latency_ms, low.timeouts) == (
        0.5,
        2,
        0.02,
        30.0,
        0,
    )
    assert low.accuracy_lower_bound == pytest.approx(wilson_lower_bound(1.0, 2))
    # avg cost only over results with a cost; timed-out case is graded (score 0) and counted
    assert medium.graded == 3
    assert medium.accuracy == pytest.approx(0.5)
    assert medium.avg_cost_usd == 0.05
    assert medium.timeouts == 1
    assert medium.p95_latency_ms == 900.0
    assert (high.accuracy, high.graded, high.carried, high.source_run_id) == (1.0, 1, False, None)


def test_summarize_without_any_cost_signal() -> None:
    [s] = summarize([out(cost=None), out(case="c2", cost=None)])
    assert s.avg_cost_usd is None


def test_zero_cost_is_a_cost_signal() -> None:
    [s] = summarize([out(cost=0.0), out(case="c2", cost=None)])
    assert s.avg_cost_usd == 0.0


def test_summarize_empty() -> None:
    assert summarize([]) == []


def test_tiers_ordered_low_medium_high() -> None:
    result = summarize([out(tier=t, case=t) for t in ("high", "low", "medium")])
    assert [s.tier for s in result] == list(TIERS)


def test_duplicates_counted_once_and_reps_distinct() -> None:
    a = out(case="c1", rep=0, score=1.0)
    b = out(case="c1", rep=1, score=0.0)
    [s] = summarize([a, a, b, b, a])
    assert s.graded == 2 and s.accuracy == 0.5


def test_confidence_is_passed_to_the_bound() -> None:
    outcomes = [out(case=f"c{i}", score=1.0 if i % 4 else 0.0) for i in range(20)]
    [s90] = summarize(outcomes, confidence=0.90)
    [s99] = summarize(outcomes, confidence=0.99)
    assert s99.accuracy_lower_bound < s90.accuracy_lower_bound
    assert s90.accuracy_lower_bound == pytest.approx(wilson_lower_bound(15, 20, 0.90))


def test_conflicting_duplicates_keep_the_first_by_log_order() -> None:
    a = out(case="c1", score=1.0, latency=5)
    b = out(case="c1", score=0.0, latency=9)
    assert dedupe_outcomes([a, b]) == [a]
    assert dedupe_outcomes([b, a]) == [b]
    [s] = summarize([a, b])
    assert (s.accuracy, s.p95_latency_ms) == (1.0, 5.0)


outcome_st = st.builds(
    out,
    model=st.sampled_from(["sim/a", "sim/b", "sim/c"]),
    case=st.sampled_from([f"c{i}" for i in range(8)]),
    rep=st.integers(0, 2),
    tier=st.sampled_from(TIERS),
    score=st.sampled_from([0.0, 0.1, 0.25, 0.45, 0.5, 0.65, 0.7, 0.95, 1.0]),
    latency=st.floats(0, 10_000),
    cost=st.none() | st.floats(0, 1),
    timed_out=st.booleans(),
)


def _unique(outcomes: list[CaseOutcome]) -> list[CaseOutcome]:
    seen: dict[tuple[str, str, int], CaseOutcome] = {}
    for o in outcomes:
        seen.setdefault((o.model, o.case_id, o.rep), o)
    return list(seen.values())


@given(st.lists(outcome_st, max_size=40), st.data())
def test_duplicates_and_reordering_leave_summaries_unchanged(
    outcomes: list[CaseOutcome], data: st.DataObject
) -> None:
    unique = _unique(outcomes)
    base = summarize(unique)
    dupes = data.draw(st.lists(st.sampled_from(unique), max_size=20)) if unique else []
    shuffled = data.draw(st.permutations(unique + dupes))
    assert summarize(shuffled) == base


@given(st.lists(outcome_st, max_size=40), st.randoms(use_true_random=False))
def test_conflicting_copies_after_the_first_change_nothing(
    outcomes: list[CaseOutcome], rnd: Any
) -> None:
    firsts = dedupe_outcomes(outcomes)
    later = list(outcomes)
    rnd.shuffle(later)
    assert summarize([*firsts, *later]) == summarize(firsts) == summarize(outcomes)
    assert summarize(list(reversed(firsts))) == summarize(firsts)


@given(st.lists(outcome_st, max_size=40))
def test_summary_invariants(outcomes: list[CaseOutcome]) -> None:
    unique = _unique(outcomes)
    summaries = summarize(unique)
    assert sum(s.graded for s in summaries) == len(unique)
    for s in summaries:
        assert s.graded >= 1
        assert 0.0 <= s.accuracy_lower_bound <= s.accuracy + 1e-12
        assert s.timeouts <= s.graded
        assert s.p95_latency_ms is not None


# --- carry_summaries ---------------------------------------------------------------------


def _summary(**kw: Any) -> ModelSummary:
    base: dict[str, Any] = dict(
        model="sim/a",
        tier="low",
        accuracy=0.8,
        accuracy_lower_bound=0.6,
        graded=10,
        avg_cost_usd=0.01,
        p95_latency_ms=100.0,
        timeouts=1,
    )
    return ModelSummary(**{**base, **kw})


def test_carry_marks_and_sets_source() -> None:
    measured = _summary()
    [c] = carry_summaries([measured], "run-1")
    assert c.carried is True and c.source_run_id == "run-1"
    assert c.model_dump(exclude={"carried", "source_run_id"}) == measured.model_dump(
        exclude={"carried", "source_run_id"}
    )
    assert measured.carried is False  # input untouched


def test_carry_keeps_the_original_source() -> None:
    already = _summary(carried=True, source_run_id="run-0")
    [c] = carry_summaries([already], "run-1")
    assert c.source_run_id == "run-0" and c.carried


def test_carry_of_carried_without_source_sets_it() -> None:
    [c] = carry_summaries([_summary(carried=True, source_run_id=None)], "run-1")
    assert c.source_run_id == "run-1"


def test_carry_keeps_order_and_is_idempotent() -> None:
    previous = [_summary(tier="high"), _summary(model="sim/b"), _summary(tier="medium")]
    once = carry_summaries(previous, "run-1")
    assert [(s.model, s.tier) for s in once] == [(s.model, s.tier) for s in previous]
    assert carry_summaries(once, "run-2") == once
    assert carry_summaries([], "run-1") == []
