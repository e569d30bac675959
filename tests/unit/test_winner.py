"""Classifier winner selection (contracts/winner.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.results import CaseOutcome, ModelSummary
from contracts.summaries import meets_accuracy, summarize
from contracts.winner import (
    ClassifierModelStats,
    classifier_stats_from_outcomes,
    classifier_stats_from_summaries,
    pick_classifier_winner,
)

Row = tuple[str, float, int, float | None, float | None]  # model, accuracy, graded, cost, p95


def stats(rows: list[Row]) -> list[ClassifierModelStats]:
    return [
        ClassifierModelStats(model=m, accuracy=a, graded=g, avg_cost_usd=c, p95_latency_ms=p)
        for m, a, g, c, p in rows
    ]


WINNER_CASES: list[tuple[str, list[Row], float, int | None, str | None, str | None]] = [
    # (name, rows, min_accuracy, max_p95, expected model, expected reason)
    (
        "cheapest meeting accuracy and latency",
        [
            ("m/a", 0.90, 72, 0.010, 500),
            ("m/b", 0.80, 72, 0.005, 800),
            ("m/c", 0.95, 72, 0.001, 2000),
        ],
        0.8,
        1000,
        "m/b",
        "cheapest_meeting_all",
    ),
    (
        "no latency budget: cheapest meeting accuracy",
        [
            ("m/a", 0.90, 72, 0.010, 500),
            ("m/b", 0.80, 72, 0.005, 800),
            ("m/c", 0.95, 72, 0.001, 2000),
        ],
        0.8,
        None,
        "m/c",
        "cheapest_meeting_all",
    ),
    (
        "below-accuracy cheap model is not picked",
        [("m/a", 0.90, 72, 0.010, 500), ("m/cheap", 0.79, 72, 0.0001, 10)],
        0.8,
        1000,
        "m/a",
        "cheapest_meeting_all",
    ),
    (
        "none meets latency: lowest p95 of those meeting accuracy",
        [
            ("m/a", 0.90, 72, 0.010, 1500),
            ("m/b", 0.85, 72, 0.005, 1200),
            ("m/fast", 0.50, 72, 0.0001, 100),
        ],
        0.8,
        1000,
        "m/b",
        "lowest_p95_meeting_accuracy",
    ),
    (
        "none meets accuracy: most accurate",
        [("m/a", 0.60, 72, 0.010, 100), ("m/b", 0.70, 72, 0.050, 5000)],
        0.8,
        1000,
        "m/b",
        "most_accurate",
    ),
    (
        "zero graded models ignored",
        [("m/ghost", 1.0, 0, 0.0, 1.0), ("m/a", 0.9, 72, 0.01, 500)],
        0.8,
        1000,
        "m/a",
        "cheapest_meeting_all",
    ),
    (
        "zero graded ignored even for most accurate",
        [("m/ghost", 1.0, 0, 0.0, 1.0), ("m/a", 0.5, 72, 0.01, 500)],
        0.8,
        1000,
        "m/a",
        "most_accurate",
    ),
    ("all zero graded: no winner", [("m/ghost", 1.0, 0, 0.0, 1.0)], 0.8, 1000, None, None),
    ("no models: no winner", [], 0.8, 1000, None, None),
    (
        "model without cost sorts after models with cost",
        [("m/nocost", 0.95, 72, None, 100), ("m/pricey", 0.85, 72, 0.5, 900)],
        0.8,
        1000,
        "m/pricey",
        "cheapest_meeting_all",
    ),
    (
        "model without cost wins when it is the only one meeting all",
        [("m/nocost", 0.95, 72, None, 100), ("m/slow", 0.85, 72, 0.01, 9000)],
        0.8,
        1000,
        "m/nocost",
        "cheapest_meeting_all",
    ),
    (
        "free model (cost 0) is cheapest",
        [("m/free", 0.85, 72, 0.0, 900), ("m/a", 0.9, 72, 0.001, 100)],
        0.8,
        1000,
        "m/free",
        "cheapest_meeting_all",
    ),
    (
        "cost tie: higher accuracy",
        [("m/a", 0.85, 72, 0.01, 100), ("m/b", 0.90, 72, 0.01, 100)],
        0.8,
        1000,
        "m/b",
        "cheapest_meeting_all",
    ),
    (
        "cost and accuracy tie: model id",
        [("m/z", 0.9, 72, 0.01, 100), ("m/a", 0.9, 72, 0.01, 900)],
        0.8,
        1000,
        "m/a",
        "cheapest_meeting_all",
    ),
    (
        "exactly at the accuracy threshold meets it",
        [("m/a", 0.8, 72, 0.01, 100), ("m/b", 0.9, 72, 0.02, 100)],
        0.8,
        1000,
        "m/a",
        "cheapest_meeting_all",
    ),
    (
        "exactly at the latency budget meets it",
        [("m/a", 0.9, 72, 0.01, 1000), ("m/b", 0.9, 72, 0.02, 100)],
        0.8,
        1000,
        "m/a",
        "cheapest_meeting_all",
    ),
    (
        "unknown p95 cannot meet a budget",
        [("m/a", 0.9, 72, 0.001, None), ("m/b", 0.9, 72, 0.02, 100)],
        0.8,
        1000,
        "m/b",
        "cheapest_meeting_all",
    ),
    (
        "unknown p95 is fine without a budget",
        [("m/a", 0.9, 72, 0.001, None), ("m/b", 0.9, 72, 0.02, 100)],
        0.8,
        None,
        "m/a",
        "cheapest_meeting_all",
    ),
    (
        "lowest p95 tie: cheaper",
        [("m/a", 0.9, 72, 0.02, 1500), ("m/b", 0.85, 72, 0.01, 1500)],
        0.8,
        1000,
        "m/b",
        "lowest_p95_meeting_accuracy",
    ),
    (
        "most accurate tie: cheaper",
        [("m/a", 0.7, 72, 0.02, 100), ("m/b", 0.7, 72, 0.01, 100)],
        0.8,
        1000,
        "m/b",
        "most_accurate",
    ),
    (
        "most accurate ignores latency",
        [("m/a", 0.7, 72, 0.01, 99999), ("m/b", 0.6, 72, 0.01, 10)],
        0.8,
        1000,
        "m/a",
        "most_accurate",
    ),
    (
        "min_accuracy 0: everyone qualifies",
        [("m/a", 0.0, 72, 0.01, 100), ("m/b", 1.0, 72, 0.02, 100)],
        0.0,
        None,
        "m/a",
        "cheapest_meeting_all",
    ),
]


@pytest.mark.parametrize(
    ("name", "rows", "min_acc", "max_p95", "model", "reason"),
    WINNER_CASES,
    ids=[c[0] for c in WINNER_CASES],
)
def test_pick_classifier_winner(
    name: str,
    rows: list[Row],
    min_acc: float,
    max_p95: int | None,
    model: str | None,
    reason: str | None,
) -> None:
    winner = pick_classifier_winner(
        stats(rows), min_accuracy=min_acc, max_p95_latency_ms=max_p95, run_id="run-7"
    )
    if model is None:
        assert winner is None
        return
    assert winner is not None
    assert (winner.model, winner.reason) == (model, reason)
    row = next(r for r in rows if r[0] == model)
    assert winner.run_id == "run-7"
    assert (winner.accuracy, winner.avgCostUsd, winner.p95LatencyMs) == (row[1], row[3], row[4])


def test_duplicate_model_is_refused() -> None:
    rows: list[Row] = [("m/a", 0.9, 1, 0.1, 1.0), ("m/a", 0.8, 1, 0.1, 1.0)]
    with pytest.raises(ValueError):
        pick_classifier_winner(stats(rows), min_accuracy=0.5, max_p95_latency_ms=None, run_id="r")


def test_accepts_a_generator() -> None:
    gen = (s for s in stats([("m/a", 0.9, 1, 0.1, 1.0)]))
    winner = pick_classifier_winner(gen, min_accuracy=0.5, max_p95_latency_ms=None, run_id="r")
    assert winner is not None and winner.model == "m/a"


# --- stats from outcomes and summaries ---------------------------------------------------


def out(
    model: str, case: str, tier: str, score: float, latency: float, cost: float | None, rep: int = 0
) -> CaseOutcome:
    return CaseOutcome(
        model=model,
        case_id=case,
        rep=rep,
        tier=tier,  # type: ignore[arg-type]
        score=score,
        latency_ms=latency,
        cost_usd=cost,
    )


def test_stats_from_outcomes_span_all_tiers() -> None:
    outcomes = [out("m/a", f"c{i}", "low", 1.0, float(i), 0.01) for i in range(19)]
    outcomes.append(out("m/a", "slow", "high", 0.0, 5000.0, None))
    outcomes.append(out("m/a", "slow", "high", 0.0, 5000.0, None))  # duplicate delivery
    outcomes.append(out("m/b", "c1", "medium", 0.5, 10.0, 0.02))
    a, b = classifier_stats_from_outcomes(outcomes)
    assert (a.model, a.graded) == ("m/a", 20)
    assert a.accuracy == pytest.approx(19 / 20)
    assert a.avg_cost_usd == pytest.approx(0.01)  # only results that carry a cost
    assert a.p95_latency_ms == 18.0  # rank 19 of 20 over all tiers: the one outlier is above
    assert (b.model, b.accuracy, b.graded, b.avg_cost_usd, b.p95_latency_ms) == (
        "m/b",
        0.5,
        1,
        0.02,
        10.0,
    )


def test_stats_from_outcomes_without_any_cost() -> None:
    [s] = classifier_stats_from_outcomes([out("m/a", "c", "low", 1.0, 1.0, None)])
    assert s.avg_cost_usd is None
    assert classifier_stats_from_outcomes([]) == []


def _summary(**kw: Any) -> ModelSummary:
    base: dict[str, Any] = dict(
        model="m/a",
        tier="low",
        accuracy=0.8,
        accuracy_lower_bound=0.5,
        graded=10,
        avg_cost_usd=0.01,
        p95_latency_ms=100.0,
    )
    return ModelSummary(**{**base, **kw})


def test_stats_from_summaries_weighted_by_graded() -> None:
    summaries = [
        _summary(tier="low", accuracy=1.0, graded=30, avg_cost_usd=0.01, p95_latency_ms=100.0),
        _summary(tier="high", accuracy=0.5, graded=10, avg_cost_usd=None, p95_latency_ms=900.0),
        _summary(tier="medium", accuracy=0.0, graded=0, avg_cost_usd=9.0, p95_latency_ms=1e6),
        _summary(model="m/b", tier="low", accuracy=0.6, graded=5),
    ]
    a, b = classifier_stats_from_summaries(summaries)
    assert a.model == "m/a" and a.graded == 40
    assert a.accuracy == pytest.approx((30 * 1.0 + 10 * 0.5) / 40)
    assert a.avg_cost_usd == pytest.approx(0.01)
    assert a.p95_latency_ms == 900.0  # conservative: the largest tier p95
    assert b.model == "m/b" and b.accuracy == 0.6


def test_pick_accepts_tier_summaries() -> None:
    summaries = [
        _summary(model="m/a", tier="low", accuracy=0.9, graded=36, avg_cost_usd=0.01),
        _summary(model="m/a", tier="high", accuracy=0.7, graded=36, avg_cost_usd=0.01),
        _summary(model="m/b", tier="low", accuracy=0.85, graded=72, avg_cost_usd=0.02),
    ]
    winner = pick_classifier_winner(
        summaries, min_accuracy=0.8, max_p95_latency_ms=None, run_id="r"
    )
    assert winner is not None and winner.model == "m/a"  # 0.8 overall, cheaper
    assert winner.accuracy == pytest.approx(0.8)


@given(
    st.lists(st.floats(0, 10_000), min_size=1, max_size=60),
    st.lists(st.sampled_from(["low", "medium", "high"]), min_size=60, max_size=60),
)
def test_max_tier_p95_bounds_the_overall_p95(latencies: list[float], tiers: list[str]) -> None:
    outcomes = [out("m/a", f"c{i}", tiers[i], 1.0, lat, 0.01) for i, lat in enumerate(latencies)]
    [exact] = classifier_stats_from_outcomes(outcomes)
    [approx] = classifier_stats_from_summaries(summarize(outcomes))
    assert exact.p95_latency_ms is not None and approx.p95_latency_ms is not None
    assert exact.p95_latency_ms <= approx.p95_latency_ms
    assert approx.accuracy == pytest.approx(exact.accuracy)


# --- properties --------------------------------------------------------------------------

row_st = st.tuples(
    st.floats(0, 1),
    st.integers(0, 100),
    st.none() | st.floats(0, 1),
    st.none() | st.floats(0, 5000),
)


@given(
    st.dictionaries(st.sampled_from([f"m/{c}" for c in "abcdefg"]), row_st, max_size=7),
    st.floats(0, 1),
    st.none() | st.integers(1, 5000),
    st.randoms(use_true_random=False),
)
def test_winner_rule_properties(
    rows: dict[str, tuple[Any, ...]], min_acc: float, budget: int | None, rnd: Any
) -> None:
    items = stats([(m, *r) for m, r in rows.items()])
    winner = pick_classifier_winner(
        items, min_accuracy=min_acc, max_p95_latency_ms=budget, run_id="r"
    )
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert (
        pick_classifier_winner(
            shuffled, min_accuracy=min_acc, max_p95_latency_ms=budget, run_id="r"
        )
        == winner
    )
    graded = [s for s in items if s.graded > 0]
    if not graded:
        assert winner is None
        return
    assert winner is not None
    w = next(s for s in graded if s.model == winner.model)
    accurate = [s for s in graded if meets_accuracy(s.accuracy, min_acc)]  # 1e-9 tolerance

    def fits(s: ClassifierModelStats) -> bool:
        return budget is None or (s.p95_latency_ms is not None and s.p95_latency_ms <= budget)

    def cost(s: ClassifierModelStats) -> float:
        return math.inf if s.avg_cost_usd is None else s.avg_cost_usd

    if winner.reason == "cheapest_meeting_all":
        assert w in accurate and fits(w)
        assert all(cost(w) <= cost(s) for s in accurate if fits(s))
    elif winner.reason == "lowest_p95_meeting_accuracy":
        assert accurate and not any(fits(s) for s in accurate)
        assert w in accurate
    else:
        assert winner.reason == "most_accurate"
        assert not accurate
        assert all(w.accuracy >= s.accuracy for s in graded)


# ---- the decide deadline (budget minus margin): never looser than /decide waits
DEADLINE = 1850
"""/decide's classifier deadline with the default 2000 ms budget and 150 ms margin."""

DEADLINE_CASES: list[tuple[str, list[Row], int | None, str, str]] = [
    # (name, rows, config budget, expected model, expected reason)
    (
        "a config budget looser than the deadline (the example's 2000) cannot let a slow "
        "cheap classifier win",
        [("m/slow-cheap", 0.90, 72, 0.001, 1900), ("m/fast", 0.85, 72, 0.002, 300)],
        2000,
        "m/fast",
        "cheapest_meeting_all",
    ),
    (
        "no config budget at all: the deadline still holds",
        [("m/slow-cheap", 0.90, 72, 0.001, 1900), ("m/fast", 0.85, 72, 0.002, 300)],
        None,
        "m/fast",
        "cheapest_meeting_all",
    ),
    (
        "only over-deadline models are accurate: the fastest of them, and the run says so",
        [
            ("m/slow", 0.90, 72, 0.001, 2500),
            ("m/slower", 0.95, 72, 0.0005, 4000),
            ("m/fast-wrong", 0.50, 72, 0.0001, 100),
        ],
        1000,
        "m/slow",
        "over_decide_deadline",
    ),
    (
        "nothing accurate, the most accurate is slow: it wins, and the run says so",
        [("m/slow", 0.60, 72, 0.001, 2500), ("m/fast", 0.50, 72, 0.002, 300)],
        None,
        "m/slow",
        "most_accurate_over_decide_deadline",
    ),
]


@pytest.mark.parametrize(
    ("name", "rows", "budget", "model", "reason"),
    DEADLINE_CASES,
    ids=[c[0] for c in DEADLINE_CASES],
)
def test_the_winner_respects_the_decide_deadline(
    name: str, rows: list[Row], budget: int | None, model: str, reason: str
) -> None:
    w = pick_classifier_winner(
        stats(rows),
        min_accuracy=0.8,
        max_p95_latency_ms=budget,
        run_id="r",
        decide_deadline_ms=DEADLINE,
    )
    assert w is not None and (w.model, w.reason) == (model, reason)
