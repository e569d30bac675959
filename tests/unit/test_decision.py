"""Decision engine and session stickiness (contracts/decision.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.classification import Classification
from contracts.config import BenchmarkConfig, DeciderModel
from contracts.decision import Decision, SessionState, decide_model, next_session_state
from contracts.results import ModelSummary
from contracts.routing_builder import build_routing_table
from contracts.routing_table import RoutingCandidate, RoutingTable
from contracts.taxonomy import TIERS, Tier

REAL = Classification(
    taskType="debugging",
    subtaskType="bug_fix",
    reasoningComplexity="medium",
    contextComplexity="medium",
    executionMode="multi_step",
    requiresTools=True,
    riskLevel="medium",
)
FALLBACK = REAL.model_copy(update={"fallback": True, "fallback_reason": "unparseable output"})


def cand(
    model: str, cost: float, meets: bool = True, effort: str = "medium", accuracy: float = 0.9
) -> RoutingCandidate:
    return RoutingCandidate(
        model=model,
        reasoningEffort=effort,  # type: ignore[arg-type]
        accuracy=accuracy,
        accuracyLowerBound=accuracy / 2,
        avgCostUsd=cost,
        graded=20,
        meetsThreshold=meets,
    )


def table(
    medium: list[RoutingCandidate], factor: float = 3.0, version: str = "run-2"
) -> RoutingTable:
    other = (cand("sim/other", 0.5),)
    return RoutingTable(
        version=version,
        published_at="2026-06-12T10:00:00Z",
        minAccuracy=0.7,
        switchCostFactor=factor,
        tiers={"low": other, "medium": tuple(medium), "high": other},
    )


def inc(model: str, effort: str = "medium", version: str = "run-1") -> SessionState:
    return SessionState(
        model=model,
        reasoning_effort=effort,  # type: ignore[arg-type]
        table_version=version,
    )


# (name, medium-tier candidates, factor, incumbent, expected model, expected sticky)
STICKY_CASES: list[tuple[str, list[RoutingCandidate], float, SessionState | None, str, bool]] = [
    (
        "no incumbent: fresh pick",
        [cand("sim/a", 0.01), cand("sim/b", 0.02)],
        3.0,
        None,
        "sim/a",
        False,
    ),
    (
        "kept: within the factor",
        [cand("sim/a", 0.01), cand("sim/b", 0.02)],
        3.0,
        inc("sim/b"),
        "sim/b",
        True,
    ),
    (
        "switched: fresh cheaper by more than the factor",
        [cand("sim/a", 0.01), cand("sim/b", 0.031)],
        3.0,
        inc("sim/b"),
        "sim/a",
        False,
    ),
    (
        "exactly at the factor is kept",
        [cand("sim/a", 0.01), cand("sim/b", 0.03)],
        3.0,
        inc("sim/b"),
        "sim/b",
        True,
    ),
    (
        "exactly at the factor is kept despite float rounding (0.3 * 3)",
        [cand("sim/a", 0.3), cand("sim/b", 0.9)],
        3.0,
        inc("sim/b"),
        "sim/b",
        True,
    ),
    (
        "exactly at a fractional factor is kept",
        [cand("sim/a", 0.1), cand("sim/b", 0.15)],
        1.5,
        inc("sim/b"),
        "sim/b",
        True,
    ),
    (
        "factor 1: only an equally cheap incumbent is kept",
        [cand("sim/a", 0.01), cand("sim/b", 0.011)],
        1.0,
        inc("sim/b"),
        "sim/a",
        False,
    ),
    (
        "factor 1: equal cost kept, but nothing cheaper was passed over",
        [cand("sim/a", 0.01), cand("sim/b", 0.01)],
        1.0,
        inc("sim/b"),
        "sim/b",
        False,
    ),
    (
        "incumbent below threshold switches",
        [cand("sim/a", 0.01), cand("sim/b", 0.005, meets=False)],
        3.0,
        inc("sim/b"),
        "sim/a",
        False,
    ),
    (
        "incumbent missing from the table switches",
        [cand("sim/a", 0.01), cand("sim/b", 0.02)],
        3.0,
        inc("sim/gone"),
        "sim/a",
        False,
    ),
    (
        "incumbent only in another tier switches",
        [cand("sim/a", 0.01)],
        3.0,
        inc("sim/other"),
        "sim/a",
        False,
    ),
    (
        "incumbent is the fresh pick: served, not sticky",
        [cand("sim/a", 0.01), cand("sim/b", 0.02)],
        3.0,
        inc("sim/a"),
        "sim/a",
        False,
    ),
    (
        "nothing above threshold: incumbent cannot be kept",
        [cand("sim/a", 0.02, meets=False), cand("sim/b", 0.01, meets=False)],
        3.0,
        inc("sim/b"),
        "sim/a",
        False,
    ),
    (
        "free fresh pick: a paid incumbent switches",
        [cand("sim/a", 0.0), cand("sim/b", 0.0001)],
        100.0,
        inc("sim/b"),
        "sim/a",
        False,
    ),
    (
        "free fresh pick: a free incumbent is kept, not sticky",
        [cand("sim/a", 0.0), cand("sim/b", 0.0)],
        3.0,
        inc("sim/b"),
        "sim/b",
        False,
    ),
    (
        "incumbent deeper in the ranking still kept",
        [cand("sim/a", 0.01), cand("sim/b", 0.015), cand("sim/c", 0.02)],
        3.0,
        inc("sim/c"),
        "sim/c",
        True,
    ),
]


@pytest.mark.parametrize(
    ("name", "cands", "factor", "incumbent", "model", "sticky"),
    STICKY_CASES,
    ids=[c[0] for c in STICKY_CASES],
)
def test_stickiness(
    name: str,
    cands: list[RoutingCandidate],
    factor: float,
    incumbent: SessionState | None,
    model: str,
    sticky: bool,
) -> None:
    d = decide_model(table(cands, factor), "medium", REAL, incumbent)
    assert (d.model, d.sticky) == (model, sticky)
    assert (d.tier, d.null_reason, d.table_version) == ("medium", None, "run-2")


def test_served_effort_comes_from_the_current_table() -> None:
    t = table([cand("sim/a", 0.01, effort="low"), cand("sim/b", 0.02, effort="high")])
    kept = decide_model(t, "medium", REAL, inc("sim/b", effort="minimal"))
    assert (kept.model, kept.reasoning_effort, kept.sticky) == ("sim/b", "high", True)
    fresh = decide_model(t, "medium", REAL, None)
    assert (fresh.model, fresh.reasoning_effort) == ("sim/a", "low")


@pytest.mark.parametrize("incumbent", [None, inc("sim/a")])
@pytest.mark.parametrize("tier", TIERS)
def test_no_table_is_a_null_decision(incumbent: SessionState | None, tier: Tier) -> None:
    d = decide_model(None, tier, REAL, incumbent)
    assert d == Decision(
        model=None,
        reasoning_effort=None,
        tier=tier,
        sticky=False,
        null_reason="no_routing_table",
        table_version=None,
    )


def test_empty_tier_in_a_hand_built_table_is_a_null_decision() -> None:
    t = table([cand("sim/a", 0.01)], version="v")
    object.__setattr__(t, "tiers", {"low": (cand("sim/a", 0.01),)})  # bypass validation
    d = decide_model(t, "high", REAL, None)
    assert (d.model, d.null_reason, d.table_version) == (None, "empty_tier", "v")


def test_fallback_classification_may_keep_the_incumbent() -> None:
    t = table([cand("sim/a", 0.01), cand("sim/b", 0.02)])
    d = decide_model(t, "medium", FALLBACK, inc("sim/b"))
    assert (d.model, d.sticky) == ("sim/b", True)


def test_decision_validates_null_consistency() -> None:
    with pytest.raises(ValueError):
        Decision(model=None, reasoning_effort=None, tier="low")
    with pytest.raises(ValueError):
        Decision(model="sim/a", reasoning_effort="low", tier="low", null_reason="x")
    with pytest.raises(ValueError):
        Decision(model="sim/a", reasoning_effort=None, tier="low")
    with pytest.raises(ValueError):
        Decision(model=None, reasoning_effort=None, tier="low", sticky=True, null_reason="x")


# --- next_session_state ------------------------------------------------------------------

SERVED = Decision(
    model="sim/b", reasoning_effort="high", tier="medium", sticky=False, table_version="run-2"
)
NULL = Decision(model=None, reasoning_effort=None, tier="medium", null_reason="no_routing_table")
PREV = inc("sim/a", effort="low", version="run-1")
NEW = SessionState(model="sim/b", reasoning_effort="high", table_version="run-2")

SESSION_CASES = [
    ("first real decision anchors", None, SERVED, REAL, NEW),
    ("real decision re-anchors", PREV, SERVED, REAL, NEW),
    ("fallback never re-anchors", PREV, SERVED, FALLBACK, PREV),
    ("fallback never anchors a new session", None, SERVED, FALLBACK, None),
    ("null decision keeps prev", PREV, NULL, REAL, PREV),
    ("null decision keeps no session", None, NULL, REAL, None),
    ("null decision with fallback keeps prev", PREV, NULL, FALLBACK, PREV),
]


@pytest.mark.parametrize(
    ("name", "prev", "decision", "classification", "expected"),
    SESSION_CASES,
    ids=[c[0] for c in SESSION_CASES],
)
def test_next_session_state(
    name: str,
    prev: SessionState | None,
    decision: Decision,
    classification: Classification,
    expected: SessionState | None,
) -> None:
    assert next_session_state(prev, decision, classification) == expected


def test_sticky_decision_refreshes_effort_and_version() -> None:
    t = table([cand("sim/a", 0.01), cand("sim/b", 0.02, effort="high")], version="run-3")
    prev = inc("sim/b", effort="low", version="run-1")
    d = decide_model(t, "medium", REAL, prev)
    assert next_session_state(prev, d, REAL) == SessionState(
        model="sim/b", reasoning_effort="high", table_version="run-3"
    )


# --- properties --------------------------------------------------------------------------

MODELS = ("sim/a", "sim/b", "sim/c", "sim/d")
CONFIG = BenchmarkConfig(
    classifierModels=("sim/cls",),
    deciderModels=tuple(DeciderModel(model=m) for m in MODELS),
    minAccuracy=0.7,
    switchCostFactor=3.0,
)


def _summaries(rows: dict[tuple[str, Tier], tuple[float, float]]) -> list[ModelSummary]:
    return [
        ModelSummary(
            model=m,
            tier=t,
            accuracy=a,
            accuracy_lower_bound=a / 2,  # type: ignore[arg-type]
            graded=10,
            avg_cost_usd=c,
        )
        for (m, t), (a, c) in rows.items()
    ]


summaries_st = st.dictionaries(
    st.tuples(st.sampled_from(MODELS), st.sampled_from(TIERS)),
    st.tuples(
        st.sampled_from([0.3, 0.69, 0.7, 0.8, 1.0]),
        st.sampled_from([0.0, 0.001, 0.003, 0.01, 0.03, 0.1]),
    ),
    min_size=1,
).map(_summaries)


@given(summaries_st, st.sampled_from(TIERS))
def test_fresh_pick_is_never_dearer_than_an_above_threshold_candidate(
    summaries: list[ModelSummary], tier: Tier
) -> None:
    t = build_routing_table(summaries, config=CONFIG, run_id="r", published_at="t")
    if not isinstance(t, RoutingTable):
        return
    d = decide_model(t, tier, REAL, None)
    assert d.model is not None and not d.sticky
    picked = next(c for c in t.tiers[tier] if c.model == d.model)
    above = [c for c in t.tiers[tier] if c.meetsThreshold]
    assert all(picked.avgCostUsd <= c.avgCostUsd for c in above)
    if above:
        assert picked.meetsThreshold


@given(summaries_st, st.sampled_from(TIERS), st.sampled_from((*MODELS, "sim/gone")))
def test_sticky_decisions_obey_the_rule(
    summaries: list[ModelSummary], tier: Tier, incumbent: str
) -> None:
    t = build_routing_table(summaries, config=CONFIG, run_id="r", published_at="t")
    if not isinstance(t, RoutingTable):
        return
    fresh = t.tiers[tier][0]
    d = decide_model(t, tier, REAL, inc(incumbent))
    assert d.model in (incumbent, fresh.model)
    served = next(c for c in t.tiers[tier] if c.model == d.model)
    if d.model != fresh.model:
        assert served.meetsThreshold
        assert served.avgCostUsd <= t.switchCostFactor * fresh.avgCostUsd * (1 + 1e-9)
    # sticky counts exactly the decisions where stickiness passed over a cheaper fresh pick
    assert d.sticky == (d.model != fresh.model and fresh.avgCostUsd < served.avgCostUsd)


@given(
    st.lists(st.tuples(st.booleans(), st.sampled_from(TIERS), st.booleans()), max_size=12),
    summaries_st,
)
def test_fallbacks_never_move_the_session(
    steps: list[tuple[bool, Tier, bool]], summaries: list[ModelSummary]
) -> None:
    t = build_routing_table(summaries, config=CONFIG, run_id="r", published_at="t")
    live = t if isinstance(t, RoutingTable) else None
    state: SessionState | None = None
    for is_fallback, tier, table_up in steps:
        c = FALLBACK if is_fallback else REAL
        d = decide_model(live if table_up else None, tier, c, state)
        new = next_session_state(state, d, c)
        if is_fallback or d.model is None:
            assert new == state
        else:
            assert new is not None and new.model == d.model
        state = new
