"""The published routing table and classifier winner."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from contracts.config import HarnessName
from contracts.taxonomy import ReasoningEffort, Tier


class RoutingCandidate(BaseModel):
    """One ranked candidate of a tier."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    reasoningEffort: ReasoningEffort
    accuracy: float = Field(ge=0.0, le=1.0)
    accuracyLowerBound: float = Field(ge=0.0, le=1.0)
    avgCostUsd: float = Field(ge=0.0)
    p95LatencyMs: float | None = None
    graded: int = Field(ge=1)
    meetsThreshold: bool
    harness: HarnessName = "builtin"
    """The agent harness that measured this cell (builtin, kilo, mini-swe-agent)."""
    """Whether it clears minAccuracy under the table's acceptance mode."""


class RoutingTable(BaseModel):
    """Per tier, candidates ranked best-bang-for-buck; every tier has at least one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    """The id of the run that published it."""
    published_at: str
    """ISO-8601 UTC timestamp of the publish."""
    minAccuracy: float = Field(ge=0.0, le=1.0)
    switchCostFactor: float = Field(ge=1.0)
    acceptance: str = "point"
    tiers: dict[Tier, tuple[RoutingCandidate, ...]]

    def model_post_init(self, __context: object) -> None:
        for tier in ("low", "medium", "high"):
            if not self.tiers.get(tier):  # type: ignore[call-overload]
                raise ValueError(f"routing table tier {tier!r} has no candidate")


class ClassifierWinner(BaseModel):
    """The classifier model chosen by a classifier run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    model: str
    accuracy: float = Field(ge=0.0, le=1.0)
    avgCostUsd: float | None = None
    p95LatencyMs: float | None = None
    reason: str
    """Which rule chose it: cheapest_meeting_all, lowest_p95_meeting_accuracy, most_accurate,
    or over_decide_deadline / most_accurate_over_decide_deadline when its p95 exceeds the
    decide deadline because no model within it reached the accuracy (see contracts.winner)."""
