"""What-if replay: real traffic through the decision engine against a candidate table.

Every ``DecisionMade`` carries the request's tier and whether its classification was a
heuristic fallback, which is all the decision engine reads. Replaying a window of them,
conversation by conversation in log order, through :func:`contracts.decision.decide_model`
and :func:`contracts.decision.next_session_state` (the functions `/decide` calls) against
another routing table says what that table would have served, stickiness included.

Expected spend and accuracy are *measured* figures: each served model's average cost per
case and accuracy in the request's tier, as the table that served it recorded them (for the
actual side) or as the candidate table records them (for the what-if side). A served model
the table does not list (or a null decision) has no measured figure and counts as
``unpriced``; averages are over priced decisions only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, computed_field

from contracts.decision import SessionState, pick_model, session_after
from contracts.routing_table import RoutingCandidate, RoutingTable
from contracts.taxonomy import TIERS, ReasoningEffort, Tier

TOTAL = "total"
"""The row of the report that sums every tier."""


class ServedDecision(BaseModel):
    """The fields of one logged ``DecisionMade`` a what-if replay reads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    conversation_id: str
    tier: Tier | None
    """None when classification failed entirely: such a request cannot be replayed."""
    model: str | None
    reasoning_effort: ReasoningEffort | None
    sticky: bool
    classification_fallback: bool
    table_version: str | None


class ModelChange(BaseModel):
    """How many decisions moved from one served model to another."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tier: Tier
    served: str | None
    candidate: str | None
    decisions: int


class SideFigures(BaseModel):
    """Measured expectations of one side (actual or what-if) over one row of the report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spend_usd: float
    """Sum of the served models' measured average cost per case, over priced decisions."""
    priced: int
    """Decisions whose served model has a measured cost and accuracy in its tier."""
    expected_accuracy: float | None
    """Mean measured accuracy of the served models over priced decisions."""
    expected_accuracy_lower_bound: float | None
    """Mean Wilson lower bound (95 %) of the served models' measured accuracy."""
    sticky: int
    """Decisions that kept an incumbent over a different, cheaper fresh pick."""
    switches: int
    """Decisions that served another model than the conversation's previous decision."""
    null: int
    """Null decisions (no model served)."""

    unpriced_served: int
    """Non-null decisions whose model the table does not list in that tier."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def sticky_share(self) -> float:
        """Sticky decisions over non-null decisions."""
        served = self.priced + self.unpriced_served
        return self.sticky / served if served else 0.0


class WhatIfRow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tier: str
    """A tier, or ``total``."""
    decisions: int
    changed: int
    """Decisions where the candidate table serves another model (or null) than was served."""
    actual: SideFigures
    whatif: SideFigures


class WhatIfReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    candidate_version: str
    decisions: int
    """Decisions in the window (replayable or not)."""
    unreplayable: int
    """Decisions without a tier (classification failed entirely): left out of every row."""
    rows: tuple[WhatIfRow, ...]
    """One per tier in tier order, then ``total``."""
    changes: tuple[ModelChange, ...]
    """(tier, served -> candidate) pairs that differ, most frequent first."""


@dataclass
class _Tally:
    # Measured figures are kept per decision and summed with fsum (exactly rounded), so the
    # report does not depend on the order conversations are read in (partitions interleave).
    costs: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    lower_bounds: list[float] = field(default_factory=list)
    sticky: int = 0
    switches: int = 0
    null: int = 0
    unpriced_served: int = 0

    def add(self, measured: RoutingCandidate | None, model: str | None, sticky: bool) -> None:
        if model is None:
            self.null += 1
        elif measured is None:
            self.unpriced_served += 1
        else:
            self.costs.append(measured.avgCostUsd)
            self.accuracies.append(measured.accuracy)
            self.lower_bounds.append(measured.accuracyLowerBound)
        if sticky:
            self.sticky += 1

    def merged(self, other: _Tally) -> _Tally:
        return _Tally(
            costs=self.costs + other.costs,
            accuracies=self.accuracies + other.accuracies,
            lower_bounds=self.lower_bounds + other.lower_bounds,
            sticky=self.sticky + other.sticky,
            switches=self.switches + other.switches,
            null=self.null + other.null,
            unpriced_served=self.unpriced_served + other.unpriced_served,
        )

    def figures(self) -> SideFigures:
        priced = len(self.costs)
        return SideFigures(
            spend_usd=math.fsum(self.costs),
            priced=priced,
            expected_accuracy=math.fsum(self.accuracies) / priced if priced else None,
            expected_accuracy_lower_bound=math.fsum(self.lower_bounds) / priced if priced else None,
            sticky=self.sticky,
            switches=self.switches,
            null=self.null,
            unpriced_served=self.unpriced_served,
        )


@dataclass
class _TierTally:
    decisions: int = 0
    changed: int = 0
    actual: _Tally = field(default_factory=_Tally)
    whatif: _Tally = field(default_factory=_Tally)


def _measured(table: RoutingTable | None, tier: Tier, model: str | None) -> RoutingCandidate | None:
    if table is None or model is None:
        return None
    return next((c for c in table.tiers.get(tier, ()) if c.model == model), None)


def replay(
    decisions: Iterable[ServedDecision],
    candidate: RoutingTable,
    tables: Mapping[str, RoutingTable],
) -> WhatIfReport:
    """Replay ``decisions`` (log order within each conversation) against ``candidate``.

    ``tables`` maps a table version to the table that served it: the actual side's measured
    figures come from there. Deterministic: the same inputs give the same report.
    """
    per_tier: dict[Tier, _TierTally] = {t: _TierTally() for t in TIERS}
    changes: dict[tuple[Tier, str | None, str | None], int] = {}
    sessions: dict[str, SessionState | None] = {}
    last_actual: dict[str, str] = {}
    last_whatif: dict[str, str] = {}
    total = unreplayable = 0
    for d in decisions:
        total += 1
        if d.tier is None:
            unreplayable += 1
            continue
        tally = per_tier[d.tier]
        tally.decisions += 1

        served_table = tables.get(d.table_version) if d.table_version else None
        tally.actual.add(_measured(served_table, d.tier, d.model), d.model, d.sticky)
        if d.model is not None:
            prev = last_actual.get(d.conversation_id)
            if prev is not None and prev != d.model:
                tally.actual.switches += 1
            last_actual[d.conversation_id] = d.model

        incumbent = sessions.get(d.conversation_id)
        decision = pick_model(candidate, d.tier, incumbent)
        sessions[d.conversation_id] = session_after(
            incumbent, decision, fallback=d.classification_fallback
        )
        tally.whatif.add(
            _measured(candidate, d.tier, decision.model), decision.model, decision.sticky
        )
        if decision.model is not None:
            prev = last_whatif.get(d.conversation_id)
            if prev is not None and prev != decision.model:
                tally.whatif.switches += 1
            last_whatif[d.conversation_id] = decision.model

        if decision.model != d.model:
            tally.changed += 1
            key = (d.tier, d.model, decision.model)
            changes[key] = changes.get(key, 0) + 1

    rows = [_row(t, per_tier[t]) for t in TIERS]
    all_tiers = _TierTally()
    for t in TIERS:
        all_tiers.decisions += per_tier[t].decisions
        all_tiers.changed += per_tier[t].changed
        all_tiers.actual = all_tiers.actual.merged(per_tier[t].actual)
        all_tiers.whatif = all_tiers.whatif.merged(per_tier[t].whatif)
    rows.append(_row(TOTAL, all_tiers))
    ordered = sorted(
        changes.items(), key=lambda kv: (-kv[1], kv[0][0], str(kv[0][1]), str(kv[0][2]))
    )
    return WhatIfReport(
        candidate_version=candidate.version,
        decisions=total,
        unreplayable=unreplayable,
        rows=tuple(rows),
        changes=tuple(
            ModelChange(tier=t, served=s, candidate=c, decisions=n) for (t, s, c), n in ordered
        ),
    )


def _row(name: str, t: _TierTally) -> WhatIfRow:
    return WhatIfRow(
        tier=name,
        decisions=t.decisions,
        changed=t.changed,
        actual=t.actual.figures(),
        whatif=t.whatif.figures(),
    )


def report_records(report: WhatIfReport) -> list[dict[str, object]]:
    """Flat rows (one per tier and total) for CSV/Parquet export."""
    out: list[dict[str, object]] = []
    for r in report.rows:
        rec: dict[str, object] = {
            "candidate_version": report.candidate_version,
            "tier": r.tier,
            "decisions": r.decisions,
            "changed": r.changed,
        }
        for side, f in (("actual", r.actual), ("whatif", r.whatif)):
            rec[f"{side}_spend_usd"] = f.spend_usd
            rec[f"{side}_priced"] = f.priced
            rec[f"{side}_expected_accuracy"] = f.expected_accuracy
            rec[f"{side}_expected_accuracy_lower_bound"] = f.expected_accuracy_lower_bound
            rec[f"{side}_sticky"] = f.sticky
            rec[f"{side}_sticky_share"] = f.sticky_share
            rec[f"{side}_switches"] = f.switches
            rec[f"{side}_null"] = f.null
        out.append(rec)
    return out
