"""What changed between two published routing tables, tier by tier (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from contracts.routing_table import RoutingCandidate, RoutingTable
from contracts.taxonomy import TIERS

ChangeKind = Literal["entered", "left", "rank_up", "rank_down", "numbers"]


@dataclass(frozen=True)
class Placed:
    """A candidate with its 1-based rank in its tier."""

    rank: int
    candidate: RoutingCandidate


@dataclass(frozen=True)
class Change:
    tier: str
    model: str
    kind: ChangeKind
    """entered, left, rank_up, rank_down, numbers (same rank, accuracy/cost moved)."""
    before: Placed | None
    after: Placed | None

    def explain(self) -> str:
        def nums(p: Placed) -> str:
            c = p.candidate
            gate = "meets" if c.meetsThreshold else "below"
            return f"acc {c.accuracy:.3f} ({gate} threshold), ${c.avgCostUsd:.6f}/case"

        b, a = self.before, self.after
        if self.kind == "entered" and a is not None:
            return f"{self.model} entered {self.tier} at rank {a.rank}: {nums(a)}"
        if self.kind == "left" and b is not None:
            return f"{self.model} left {self.tier} (was rank {b.rank}: {nums(b)})"
        assert a is not None and b is not None
        if self.kind == "numbers":
            return f"{self.model} stays rank {a.rank} in {self.tier}: {nums(b)} -> {nums(a)}"
        return (
            f"{self.model} moved rank {b.rank} -> {a.rank} in {self.tier}: {nums(b)} -> {nums(a)}"
        )


@dataclass(frozen=True)
class TableDiff:
    a: RoutingTable
    b: RoutingTable
    changes: tuple[Change, ...]
    settings: tuple[str, ...] = field(default=())
    """Changed table-wide settings (minAccuracy, switchCostFactor, acceptance)."""


def _placed(table: RoutingTable, tier: str) -> dict[str, Placed]:
    ranked = table.tiers.get(tier, ())  # type: ignore[call-overload]
    return {c.model: Placed(rank, c) for rank, c in enumerate(ranked, start=1)}


def diff_tables(a: RoutingTable, b: RoutingTable) -> TableDiff:
    """What changed from table `a` to table `b`, tier by tier."""
    changes: list[Change] = []
    for tier in TIERS:
        before, after = _placed(a, tier), _placed(b, tier)
        for model in sorted(before.keys() | after.keys()):
            x, y = before.get(model), after.get(model)
            if x is None:
                changes.append(Change(tier, model, "entered", None, y))
            elif y is None:
                changes.append(Change(tier, model, "left", x, None))
            elif x.rank != y.rank:
                kind: ChangeKind = "rank_up" if y.rank < x.rank else "rank_down"
                changes.append(Change(tier, model, kind, x, y))
            elif (x.candidate.accuracy, x.candidate.avgCostUsd, x.candidate.meetsThreshold) != (
                y.candidate.accuracy,
                y.candidate.avgCostUsd,
                y.candidate.meetsThreshold,
            ):
                changes.append(Change(tier, model, "numbers", x, y))
    settings = [
        f"{name}: {va} -> {vb}"
        for name, va, vb in (
            ("minAccuracy", a.minAccuracy, b.minAccuracy),
            ("switchCostFactor", a.switchCostFactor, b.switchCostFactor),
            ("acceptance", a.acceptance, b.acceptance),
        )
        if va != vb
    ]
    return TableDiff(a, b, tuple(changes), tuple(settings))
