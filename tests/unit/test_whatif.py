"""What-if replay (contracts/whatif.py) on a hand-made decision log with a hand-computed report.

The served table T1 and the candidate T2 (switch-cost factor 3) are small enough to follow by
hand; the expected figures below were computed on paper from the rule in contracts/decision.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.routing_table import RoutingCandidate, RoutingTable
from contracts.taxonomy import TIERS
from contracts.whatif import TOTAL, ModelChange, ServedDecision, replay


def cand(model: str, cost: float, acc: float, lb: float, meets: bool = True) -> RoutingCandidate:
    return RoutingCandidate(
        model=model,
        reasoningEffort="medium",
        accuracy=acc,
        accuracyLowerBound=lb,
        avgCostUsd=cost,
        graded=20,
        meetsThreshold=meets,
    )


T1 = RoutingTable(
    version="t1",
    published_at="2026-12-01T00:00:00Z",
    minAccuracy=0.8,
    switchCostFactor=1.5,
    tiers={
        "low": (cand("B", 0.004, 0.95, 0.85), cand("A", 0.002, 0.70, 0.60, meets=False)),
        "medium": (cand("C", 0.010, 0.97, 0.90),),
        "high": (cand("C", 0.010, 0.90, 0.80),),
    },
)
T2 = RoutingTable(
    version="t2",
    published_at="2026-12-02T00:00:00Z",
    minAccuracy=0.8,
    switchCostFactor=3.0,
    tiers={
        "low": (cand("A", 0.002, 0.90, 0.80), cand("B", 0.004, 0.95, 0.85)),
        "medium": (cand("B", 0.004, 0.92, 0.82), cand("C", 0.010, 0.97, 0.90)),
        "high": (cand("C", 0.010, 0.90, 0.80),),
    },
)


def served(
    conv: str,
    tier: str | None,
    model: str | None,
    *,
    fallback: bool = False,
    version: str | None = "t1",
) -> ServedDecision:
    return ServedDecision(
        conversation_id=conv,
        tier=tier,  # type: ignore[arg-type]
        model=model,
        reasoning_effort="medium" if model else None,
        sticky=False,
        classification_fallback=fallback,
        table_version=version if model else None,
    )


LOG = [
    served("c1", "low", "B"),
    served("c2", "high", "C"),
    served("c1", "medium", "C"),
    served("c2", "low", "B", fallback=True),  # a fallback never re-anchors the session
    served("c3", None, None),  # classifier failed entirely: not replayable
    served("c1", "low", "B"),
    served("c2", "medium", "C"),
    served("c4", "low", None),  # a null decision served nothing
]


def test_hand_computed_report() -> None:
    report = replay(LOG, T2, {"t1": T1})
    assert report.decisions == 8
    assert report.unreplayable == 1
    rows = {r.tier: r for r in report.rows}
    assert [r.tier for r in report.rows] == [*TIERS, TOTAL]

    low, medium, high, total = rows["low"], rows["medium"], rows["high"], rows[TOTAL]
    assert (low.decisions, low.changed) == (4, 3)
    assert (medium.decisions, medium.changed) == (2, 1)
    assert (high.decisions, high.changed) == (1, 0)
    assert (total.decisions, total.changed) == (7, 4)

    # actual side: measured by T1, the table that served them
    assert low.actual.priced == 3 and low.actual.null == 1
    assert low.actual.spend_usd == pytest.approx(0.012)
    assert low.actual.expected_accuracy == pytest.approx(0.95)
    assert low.actual.switches == 2 and low.actual.sticky == 0
    assert medium.actual.spend_usd == pytest.approx(0.020)
    assert medium.actual.switches == 2
    assert total.actual.spend_usd == pytest.approx(0.042)
    assert total.actual.expected_accuracy == pytest.approx(5.69 / 6)
    assert total.actual.expected_accuracy_lower_bound == pytest.approx(5.15 / 6)
    assert total.actual.switches == 4

    # what-if side: T2 keeps B (c1) and C (c2) sticky over a cheaper fresh pick
    assert low.whatif.priced == 4 and low.whatif.null == 0
    assert low.whatif.spend_usd == pytest.approx(0.010)
    assert low.whatif.expected_accuracy == pytest.approx(0.9125)
    assert low.whatif.expected_accuracy_lower_bound == pytest.approx(0.8125)
    assert (low.whatif.sticky, low.whatif.switches) == (1, 1)
    assert medium.whatif.spend_usd == pytest.approx(0.014)
    assert (medium.whatif.sticky, medium.whatif.switches) == (1, 2)
    assert high.whatif.spend_usd == pytest.approx(0.010)
    assert total.whatif.spend_usd == pytest.approx(0.034)
    assert total.whatif.expected_accuracy == pytest.approx(0.92)
    assert total.whatif.expected_accuracy_lower_bound == pytest.approx(5.77 / 7)
    assert (total.whatif.sticky, total.whatif.switches) == (2, 3)
    assert total.whatif.sticky_share == pytest.approx(2 / 7)

    assert report.changes == (
        ModelChange(tier="low", served="B", candidate="A", decisions=2),
        ModelChange(tier="low", served=None, candidate="A", decisions=1),
        ModelChange(tier="medium", served="C", candidate="B", decisions=1),
    )


def test_deterministic() -> None:
    assert replay(LOG, T2, {"t1": T1}) == replay(list(LOG), T2, {"t1": T1})


def test_the_serving_table_changes_nothing() -> None:
    """Replaying T1's own decisions against T1 reproduces them (the engine is the same)."""
    log = [d for d in LOG if d.model is not None]
    report = replay(log, T1, {"t1": T1})
    assert all(r.changed == 0 for r in report.rows)
    assert report.changes == ()


def test_unknown_served_table_is_unpriced() -> None:
    report = replay([served("c1", "low", "B", version="gone")], T2, {})
    total = next(r for r in report.rows if r.tier == TOTAL)
    assert total.actual.priced == 0 and total.actual.unpriced_served == 1
    assert total.actual.expected_accuracy is None
    assert total.whatif.priced == 1


@settings(deadline=None)  # a loaded CI machine must not make a correct run fail
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["c1", "c2", "c3"]),
            st.sampled_from(["low", "medium", "high"]),
            st.booleans(),
        ),
        max_size=40,
    )
)
def test_interleaving_conversations_does_not_matter(turns: list[tuple[str, str, bool]]) -> None:
    """State is per conversation: any interleaving keeping each conversation's order agrees."""
    log = [served(c, t, "B" if t == "low" else "C", fallback=f) for c, t, f in turns]
    grouped = sorted(log, key=lambda d: d.conversation_id)  # stable: keeps per-conv order
    assert replay(log, T2, {"t1": T1}) == replay(grouped, T2, {"t1": T1})
