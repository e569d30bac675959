"""The decision engine: pick a model for a request's tier, with per-session stickiness.

Fresh pick: the tier's first candidate in the routing table (cheapest above threshold, or
the most accurate when none is above).

Stickiness: a conversation keeps its incumbent model iff the incumbent

1. is still a candidate of this tier in the current table,
2. still meets the tier's threshold (its ``meetsThreshold``), and
3. costs at most ``switchCostFactor`` times the fresh pick (equality keeps it).

Why: a switch throws away the provider's prompt cache, and rebuilding it costs full-price
input tokens (4-10x cache-read rates) on the context that dominates an agent session's
spend. A switch only pays off when the per-turn savings clearly exceed that one-time
penalty, which is what the factor encodes.

``sticky`` marks a decision that stickiness made dearer: the incumbent was kept although a
different, strictly cheaper fresh pick was passed over. An incumbent that is the fresh pick,
or costs no more than it, is served as it would have been anyway, so it is not counted.

The session state itself only follows real classifier output: a heuristic-fallback
classification never re-anchors a session, and a null decision never changes it.
"""

from __future__ import annotations

import math
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from contracts.classification import Classification
from contracts.routing_table import RoutingCandidate, RoutingTable
from contracts.taxonomy import ReasoningEffort, Tier

NullReason = Literal["no_routing_table", "empty_tier"]

_COST_REL_TOL: Final = 1e-9
"""Relative slack on the switch-cost comparison: 0.3 * 3 is 0.8999999999999999 in floats,
and an incumbent exactly at the factor must be kept."""


class SessionState(BaseModel):
    """What a conversation remembers between decisions: the model last served."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    reasoning_effort: ReasoningEffort
    """The reasoning effort it was served at."""
    table_version: str
    """Version (publishing run id) of the routing table the decision used."""


class Decision(BaseModel):
    """The decision engine's answer for one request.

    Either ``model`` is set and ``null_reason`` is None, or the decision is null: ``model``
    and ``reasoning_effort`` are None and ``null_reason`` says why (the gateway then serves
    its own default).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None
    reasoning_effort: ReasoningEffort | None
    tier: Tier
    sticky: bool = False
    """True when the session's incumbent was kept over a different, cheaper fresh pick."""
    null_reason: str | None = None
    table_version: str | None = None
    """Version of the table the decision came from; None without a table."""

    @model_validator(mode="after")
    def _null_consistent(self) -> Decision:
        if (self.model is None) != (self.null_reason is not None):
            raise ValueError("exactly one of model and null_reason must be set")
        if self.model is None and (self.reasoning_effort is not None or self.sticky):
            raise ValueError("a null decision has no reasoning_effort and is not sticky")
        if self.model is not None and self.reasoning_effort is None:
            raise ValueError("a decision with a model needs its reasoning_effort")
        return self


def _within_switch_cost(incumbent: float, fresh: float, factor: float) -> bool:
    limit = factor * fresh
    return incumbent <= limit or math.isclose(incumbent, limit, rel_tol=_COST_REL_TOL)


def _chosen(c: RoutingCandidate, tier: Tier, sticky: bool, version: str) -> Decision:
    return Decision(
        model=c.model,
        reasoning_effort=c.reasoningEffort,
        tier=tier,
        sticky=sticky,
        table_version=version,
    )


def decide_model(
    table: RoutingTable | None,
    tier: Tier,
    classification: Classification,
    incumbent: SessionState | None,
) -> Decision:
    """Pick the model for a request of ``tier`` (see the module docstring for the rule).

    ``classification`` is the request's classification. It does not change the pick — a
    fallback classification may still keep an incumbent, which is the conservative choice
    when the tier itself is a guess — but it is part of the engine's contract so the caller
    hands the same inputs to :func:`next_session_state`. The served reasoning effort is
    always the current table's (the admin may have re-pinned it since the session began).
    """
    del classification  # see the docstring: informational for this step
    return pick_model(table, tier, incumbent)


def pick_model(table: RoutingTable | None, tier: Tier, incumbent: SessionState | None) -> Decision:
    """The engine's pick from the tier and the incumbent alone (what-if replay calls it on
    logged decisions, which carry the tier but not the whole classification)."""
    if table is None:
        return Decision(
            model=None, reasoning_effort=None, tier=tier, null_reason="no_routing_table"
        )
    candidates = table.tiers.get(tier, ())
    if not candidates:  # a valid table never has one; stay total for hand-built ones
        return Decision(
            model=None,
            reasoning_effort=None,
            tier=tier,
            null_reason="empty_tier",
            table_version=table.version,
        )
    fresh = candidates[0]
    if incumbent is not None:
        current = next((c for c in candidates if c.model == incumbent.model), None)
        if (
            current is not None
            and current.meetsThreshold
            and _within_switch_cost(current.avgCostUsd, fresh.avgCostUsd, table.switchCostFactor)
        ):
            passed_over = current.model != fresh.model and fresh.avgCostUsd < current.avgCostUsd
            return _chosen(current, tier, sticky=passed_over, version=table.version)
    return _chosen(fresh, tier, sticky=False, version=table.version)


def next_session_state(
    prev: SessionState | None, decision: Decision, classification: Classification
) -> SessionState | None:
    """The session state after serving ``decision``.

    A null decision serves nothing and a fallback classification is untrusted, so both keep
    ``prev`` unchanged (same trust rule as the classification cache). Otherwise the served
    model becomes the incumbent.
    """
    return session_after(prev, decision, fallback=classification.fallback)


def session_after(
    prev: SessionState | None, decision: Decision, *, fallback: bool
) -> SessionState | None:
    """:func:`next_session_state` given only whether the classification was a fallback."""
    if decision.model is None or decision.reasoning_effort is None:
        return prev
    if fallback:
        return prev
    if decision.table_version is None:  # a non-null decision always names its table
        return prev
    return SessionState(
        model=decision.model,
        reasoning_effort=decision.reasoning_effort,
        table_version=decision.table_version,
    )
