"""Routing-table builder (contracts/routing_builder.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.config import BenchmarkConfig, DeciderModel
from contracts.results import ModelSummary
from contracts.routing_builder import PublishSkipped, build_routing_table, rank_tier
from contracts.routing_table import RoutingTable
from contracts.taxonomy import TIERS

MODELS = ("sim/a", "sim/b", "sim/c", "sim/d", "sim/e")


def config(**kw: Any) -> BenchmarkConfig:
    base: dict[str, Any] = dict(
        classifierModels=("sim/cls",),
        deciderModels=tuple(
            DeciderModel(model=m, reasoningEffort=e)
            for m, e in zip(MODELS, ("low", "medium", "high", "minimal", "medium"), strict=True)
        ),
        minAccuracy=0.7,
        switchCostFactor=3.0,
        acceptance="point",
    )
    return BenchmarkConfig(**{**base, **kw})


def summ(
    model: str,
    tier: str = "low",
    accuracy: float = 0.8,
    cost: float | None = 0.01,
    graded: int = 20,
    lb: float | None = None,
    **kw: Any,
) -> ModelSummary:
    return ModelSummary(
        model=model,
        tier=tier,
        accuracy=accuracy,  # type: ignore[arg-type]
        accuracy_lower_bound=max(accuracy - 0.1, 0.0) if lb is None else lb,
        graded=graded,
        avg_cost_usd=cost,
        p95_latency_ms=1000.0,
        **kw,
    )


def all_tiers(model: str = "sim/e", **kw: Any) -> list[ModelSummary]:
    """A filler model present in every tier so tables are publishable."""
    return [summ(model, t, **kw) for t in TIERS]


def build(summaries: list[ModelSummary], **cfg: Any) -> RoutingTable | PublishSkipped:
    return build_routing_table(
        summaries, config=config(**cfg), run_id="run-9", published_at="2026-06-12T10:00:00Z"
    )


def low_models(result: RoutingTable | PublishSkipped) -> list[tuple[str, bool]]:
    assert isinstance(result, RoutingTable), result
    return [(c.model, c.meetsThreshold) for c in result.tiers["low"]]


# (name, low-tier summaries (model, accuracy, cost, graded), config overrides, expected ranking)
RANK_CASES: list[
    tuple[str, list[tuple[str, float, float | None, int]], dict[str, Any], list[tuple[str, bool]]]
] = [
    (
        "above cheapest first, then below by accuracy",
        [
            ("sim/a", 0.90, 0.05, 20),
            ("sim/b", 0.75, 0.01, 20),
            ("sim/c", 0.60, 0.001, 20),
            ("sim/d", 0.65, 0.5, 20),
        ],
        {},
        [("sim/b", True), ("sim/a", True), ("sim/d", False), ("sim/c", False)],
    ),
    (
        "cheap below-threshold never outranks an above-threshold one",
        [("sim/a", 0.95, 1.0, 20), ("sim/b", 0.10, 0.0, 20)],
        {},
        [("sim/a", True), ("sim/b", False)],
    ),
    (
        "above: cost tie -> higher accuracy",
        [("sim/a", 0.80, 0.01, 20), ("sim/b", 0.90, 0.01, 20)],
        {},
        [("sim/b", True), ("sim/a", True)],
    ),
    (
        "above: cost and accuracy tie -> model id",
        [("sim/c", 0.80, 0.01, 20), ("sim/a", 0.80, 0.01, 20)],
        {},
        [("sim/a", True), ("sim/c", True)],
    ),
    (
        "below: accuracy tie -> cheaper",
        [("sim/a", 0.50, 0.02, 20), ("sim/b", 0.50, 0.01, 20)],
        {},
        [("sim/b", False), ("sim/a", False)],
    ),
    (
        "below: accuracy and cost tie -> model id",
        [("sim/d", 0.50, 0.01, 20), ("sim/b", 0.50, 0.01, 20)],
        {},
        [("sim/b", False), ("sim/d", False)],
    ),
    (
        "exactly at minAccuracy is above threshold",
        [("sim/a", 0.70, 0.02, 20), ("sim/b", 0.69, 0.01, 20)],
        {},
        [("sim/a", True), ("sim/b", False)],
    ),
    (
        "zero graded excluded",
        [("sim/a", 1.0, 0.0, 0), ("sim/b", 0.8, 0.01, 20)],
        {},
        [("sim/b", True)],
    ),
    (
        "no cost signal excluded",
        [("sim/a", 1.0, None, 20), ("sim/b", 0.8, 0.01, 20)],
        {},
        [("sim/b", True)],
    ),
    (
        "zero cost is a cost signal",
        [("sim/a", 0.8, 0.0, 20), ("sim/b", 0.8, 0.01, 20)],
        {},
        [("sim/a", True), ("sim/b", True)],
    ),
    (
        "all below threshold: most accurate first",
        [("sim/a", 0.3, 0.01, 20), ("sim/b", 0.6, 0.5, 20)],
        {},
        [("sim/b", False), ("sim/a", False)],
    ),
    (
        "minAccuracy 0: everything above, cheapest first",
        [("sim/a", 0.0, 0.01, 20), ("sim/b", 1.0, 0.5, 20)],
        {"minAccuracy": 0.0},
        [("sim/a", True), ("sim/b", True)],
    ),
]


@pytest.mark.parametrize(
    ("name", "rows", "cfg", "expected"), RANK_CASES, ids=[c[0] for c in RANK_CASES]
)
def test_ranking(
    name: str,
    rows: list[tuple[str, float, float | None, int]],
    cfg: dict[str, Any],
    expected: list[tuple[str, bool]],
) -> None:
    summaries = [summ(m, "low", a, c, g) for m, a, c, g in rows]
    summaries += [summ("sim/e", t) for t in ("medium", "high")]
    assert low_models(build(summaries, **cfg)) == expected


def test_acceptance_point_vs_lower_bound() -> None:
    summaries = [
        summ("sim/a", "low", accuracy=0.8, lb=0.6, cost=0.01),
        summ("sim/b", "low", accuracy=0.9, lb=0.75, cost=0.02),
    ]
    summaries += [summ("sim/e", t) for t in ("medium", "high")]
    point = build(summaries, acceptance="point")
    bound = build(summaries, acceptance="lower_bound")
    assert low_models(point) == [("sim/a", True), ("sim/b", True)]
    assert low_models(bound) == [("sim/b", True), ("sim/a", False)]
    assert isinstance(bound, RoutingTable) and bound.acceptance == "lower_bound"


def test_lower_bound_exactly_at_threshold_meets() -> None:
    summaries = [summ("sim/a", t, accuracy=0.9, lb=0.7) for t in TIERS]
    table = build(summaries, acceptance="lower_bound")
    assert isinstance(table, RoutingTable)
    assert all(c.meetsThreshold for cs in table.tiers.values() for c in cs)


def test_only_configured_deciders_with_their_pinned_effort() -> None:
    summaries = all_tiers("sim/c") + all_tiers("sim/unknown", cost=0.0, accuracy=1.0)
    table = build(summaries)
    assert isinstance(table, RoutingTable)
    for tier in TIERS:
        assert [(c.model, c.reasoningEffort) for c in table.tiers[tier]] == [("sim/c", "high")]


def test_candidate_fields_copied_from_summary() -> None:
    s = summ("sim/b", "low", accuracy=0.85, lb=0.66, cost=0.02, graded=42)
    table = build([s] + [summ("sim/e", t) for t in ("medium", "high")])
    assert isinstance(table, RoutingTable)
    [c] = table.tiers["low"]
    assert (
        c.model,
        c.reasoningEffort,
        c.accuracy,
        c.accuracyLowerBound,
        c.avgCostUsd,
        c.p95LatencyMs,
        c.graded,
        c.meetsThreshold,
    ) == ("sim/b", "medium", 0.85, 0.66, 0.02, 1000.0, 42, True)


def test_table_carries_snapshot_settings() -> None:
    table = build(all_tiers(), minAccuracy=0.65, switchCostFactor=2.5, acceptance="point")
    assert isinstance(table, RoutingTable)
    assert (table.version, table.published_at) == ("run-9", "2026-06-12T10:00:00Z")
    assert (table.minAccuracy, table.switchCostFactor, table.acceptance) == (0.65, 2.5, "point")
    assert set(table.tiers) == set(TIERS)


def test_carried_summaries_count_like_measured() -> None:
    carried = [
        s.model_copy(update={"carried": True, "source_run_id": "run-1"})
        for s in all_tiers("sim/a", cost=0.001)
    ]
    table = build(carried + all_tiers("sim/b", cost=0.01))
    assert isinstance(table, RoutingTable)
    assert all(table.tiers[t][0].model == "sim/a" for t in TIERS)


# --- publish skipped ---------------------------------------------------------------------

SKIP_CASES = [
    ("one tier missing", [summ("sim/a", "low"), summ("sim/a", "high")], ("medium",)),
    (
        "tier only has zero-graded models",
        [summ("sim/a", "low"), summ("sim/a", "medium", graded=0), summ("sim/a", "high")],
        ("medium",),
    ),
    (
        "tier only has cost-less models",
        [summ("sim/a", "low"), summ("sim/a", "medium"), summ("sim/a", "high", cost=None)],
        ("high",),
    ),
    (
        "tier only has unconfigured models",
        [summ("sim/zzz", "low"), summ("sim/a", "medium"), summ("sim/a", "high")],
        ("low",),
    ),
    ("two tiers empty", [summ("sim/a", "medium")], ("low", "high")),
    ("no summaries at all", [], ("low", "medium", "high")),
]


@pytest.mark.parametrize(("name", "summaries", "empty"), SKIP_CASES, ids=[c[0] for c in SKIP_CASES])
def test_publish_skipped(name: str, summaries: list[ModelSummary], empty: tuple[str, ...]) -> None:
    result = build(summaries)
    assert isinstance(result, PublishSkipped)
    assert result.empty_tiers == empty
    for tier in empty:
        assert tier in result.reason


def test_below_threshold_only_tier_still_publishes() -> None:
    table = build(all_tiers(accuracy=0.1))
    assert isinstance(table, RoutingTable)
    assert not any(c.meetsThreshold for cs in table.tiers.values() for c in cs)


# --- duplicates --------------------------------------------------------------------------


def test_measured_summary_beats_carried_copy() -> None:
    measured = all_tiers("sim/a", cost=0.05)
    carried = [
        s.model_copy(update={"carried": True, "source_run_id": "r0", "avg_cost_usd": 0.001})
        for s in measured
    ]
    table = build(carried + measured + all_tiers("sim/b", cost=0.01))
    assert isinstance(table, RoutingTable)
    assert [c.model for c in table.tiers["low"]] == ["sim/b", "sim/a"]


def test_identical_duplicates_tolerated() -> None:
    table = build(all_tiers() + all_tiers())
    assert isinstance(table, RoutingTable)
    assert all(len(table.tiers[t]) == 1 for t in TIERS)


def test_conflicting_measured_duplicates_refused() -> None:
    with pytest.raises(ValueError):
        build(all_tiers(cost=0.01) + all_tiers(cost=0.02))


# --- properties --------------------------------------------------------------------------

summary_st = st.builds(
    summ,
    model=st.sampled_from((*MODELS, "sim/unknown")),
    tier=st.sampled_from(TIERS),
    accuracy=st.sampled_from([0.2, 0.5, 0.69, 0.7, 0.71, 0.9, 1.0]),
    cost=st.none() | st.sampled_from([0.0, 0.001, 0.01, 0.05, 0.5]),
    graded=st.integers(0, 30),
)


def _unique(summaries: list[ModelSummary]) -> list[ModelSummary]:
    seen: dict[tuple[str, str], ModelSummary] = {}
    for s in summaries:
        seen.setdefault((s.model, s.tier), s)
    return list(seen.values())


@given(
    st.lists(summary_st, max_size=25),
    st.sampled_from(["point", "lower_bound"]),
    st.randoms(use_true_random=False),
)
def test_ranking_properties(raw: list[ModelSummary], acceptance: str, rnd: Any) -> None:
    summaries = _unique(raw)
    cfg = config(acceptance=acceptance)
    shuffled = list(summaries)
    rnd.shuffle(shuffled)
    for tier in TIERS:
        in_tier = [s for s in summaries if s.tier == tier]
        ranked = rank_tier(in_tier, cfg)
        assert rank_tier([s for s in shuffled if s.tier == tier], cfg) == ranked
        flags = [c.meetsThreshold for c in ranked]
        assert flags == sorted(flags, reverse=True)  # all above before all below
        above = [c for c in ranked if c.meetsThreshold]
        below = [c for c in ranked if not c.meetsThreshold]
        assert [c.avgCostUsd for c in above] == sorted(c.avgCostUsd for c in above)
        assert [c.accuracy for c in below] == sorted((c.accuracy for c in below), reverse=True)
        eligible = {
            s.model
            for s in in_tier
            if s.graded > 0 and s.avg_cost_usd is not None and s.model in MODELS
        }
        assert {c.model for c in ranked} == eligible
    result = build_routing_table(summaries, config=cfg, run_id="r", published_at="t")
    empty = tuple(t for t in TIERS if not rank_tier([s for s in summaries if s.tier == t], cfg))
    if empty:
        assert isinstance(result, PublishSkipped) and result.empty_tiers == empty
    else:
        assert isinstance(result, RoutingTable)


@pytest.mark.parametrize("harness", ["builtin", "kilo", "mini-swe-agent"])
def test_each_cell_names_the_harness_that_measured_it(harness: str) -> None:
    table = build(all_tiers(harness=harness), deciderHarness=harness)
    assert isinstance(table, RoutingTable)
    cells = [c for tier in TIERS for c in table.tiers[tier]]
    assert cells and {c.harness for c in cells} == {harness}


def test_a_summary_without_a_harness_is_the_runs_harness() -> None:
    table = build(all_tiers(), deciderHarness="kilo")
    assert isinstance(table, RoutingTable)
    assert {c.harness for tier in TIERS for c in table.tiers[tier]} == {"kilo"}
