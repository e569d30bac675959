"""The diff of two published routing tables, tier by tier."""

from __future__ import annotations

from contracts.routing_diff import diff_tables
from contracts.routing_table import RoutingCandidate, RoutingTable


def _table(version: str, cands: list[tuple[str, str, float, float, bool]]) -> RoutingTable:
    """Candidates as (tier, model, accuracy, cost, meets), in rank order per tier."""
    tiers: dict[str, list[RoutingCandidate]] = {"low": [], "medium": [], "high": []}
    for tier, model, acc, cost, ok in cands:
        tiers[tier].append(
            RoutingCandidate(
                model=model,
                reasoningEffort="medium",
                accuracy=acc,
                accuracyLowerBound=acc,
                avgCostUsd=cost,
                graded=10,
                meetsThreshold=ok,
            )
        )
    return RoutingTable(
        version=version,
        published_at="2026-01-01T00:00:00Z",
        minAccuracy=0.7,
        switchCostFactor=3.0,
        tiers={t: tuple(cs) for t, cs in tiers.items()},  # type: ignore[misc]
    )


HIGH = ("high", "h", 0.9, 1.0, True)


def test_diff_explains_entries_exits_and_rank_changes() -> None:
    a = _table(
        "r1",
        [
            ("low", "x", 0.9, 0.1, True),
            ("low", "y", 0.95, 0.5, True),
            ("medium", "z", 0.8, 1.0, True),
            HIGH,
        ],
    )
    b = _table(
        "r2",
        [
            ("low", "y", 0.95, 0.05, True),
            ("low", "x", 0.9, 0.1, True),
            ("medium", "z", 0.85, 1.0, True),
            ("medium", "w", 0.5, 0.1, False),
            HIGH,
        ],
    )
    kinds = {(c.tier, c.model): c.kind for c in diff_tables(a, b).changes}
    assert kinds == {
        ("low", "x"): "rank_down",
        ("low", "y"): "rank_up",
        ("medium", "z"): "numbers",
        ("medium", "w"): "entered",
    }
    text = {c.model: c.explain() for c in diff_tables(a, b).changes}
    assert "$0.500000/case -> acc 0.950 (meets threshold), $0.050000/case" in text["y"]
    assert "moved rank 1 -> 2 in low" in text["x"]
    assert "entered medium at rank 2" in text["w"]
    gone = diff_tables(b, a).changes
    assert any(c.kind == "left" and c.model == "w" for c in gone)
    assert diff_tables(a, b).settings == ()


def test_diff_names_changed_table_settings() -> None:
    a = _table("r1", [("low", "x", 0.9, 0.1, True), ("medium", "z", 0.8, 1.0, True), HIGH])
    b = a.model_copy(update={"version": "r2", "minAccuracy": 0.8, "acceptance": "lower_bound"})
    d = diff_tables(a, b)
    assert d.changes == ()
    assert d.settings == ("minAccuracy: 0.7 -> 0.8", "acceptance: point -> lower_bound")
