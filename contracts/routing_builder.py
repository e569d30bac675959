"""Build the routing table a decider run publishes, from its summaries and config snapshot.

Per tier, candidates are ranked best-bang-for-buck (seed `routing-table-builder.ts`):

* eligible: the model is one of the snapshot's ``deciderModels`` (its pinned reasoning effort
  comes from there), has at least one graded case in the tier, and has a cost signal
  (``avg_cost_usd`` not None: an unknown cost cannot be ranked by price);
* ``meetsThreshold``: ``accuracy >= minAccuracy`` under ``acceptance="point"``, or
  ``accuracy_lower_bound >= minAccuracy`` under ``"lower_bound"``;
* above-threshold candidates first, cheapest first (tie: higher accuracy, then model id);
  then below-threshold ones, most accurate first (tie: cheaper, then model id) — so the
  first candidate is the cheapest proven model, or the best effort when none is proven.

Carried summaries count exactly like measured ones. If any tier ends up empty, nothing is
published (:class:`PublishSkipped`) and the previous table stays live.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from contracts.config import BenchmarkConfig
from contracts.results import ModelSummary
from contracts.routing_table import RoutingCandidate, RoutingTable
from contracts.summaries import meets_accuracy
from contracts.taxonomy import TIERS, Tier


class PublishSkipped(BaseModel):
    """A decider run produced no publishable table; the previous one stays live."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    empty_tiers: tuple[Tier, ...] = Field(min_length=1)
    """The tiers left without any candidate, in tier order (low, medium, high)."""
    reason: str
    """Human-readable explanation naming the empty tiers."""


_NO_CANDIDATE: Final = "no eligible candidate (graded > 0, cost known, configured decider)"


def _meets(s: ModelSummary, config: BenchmarkConfig) -> bool:
    value = s.accuracy_lower_bound if config.acceptance == "lower_bound" else s.accuracy
    return meets_accuracy(value, config.minAccuracy)


def _pick_one(dupes: list[ModelSummary]) -> ModelSummary:
    """One summary per (model, tier): a measured one beats a carried copy of older data."""
    measured = [s for s in dupes if not s.carried]
    pool = measured or dupes
    if any(s != pool[0] for s in pool[1:]):
        raise ValueError(f"conflicting summaries for model {pool[0].model!r} tier {pool[0].tier!r}")
    return pool[0]


def rank_tier(summaries: Sequence[ModelSummary], config: BenchmarkConfig) -> list[RoutingCandidate]:
    """The ranked candidates of one tier's summaries (see the module docstring)."""
    candidates: list[RoutingCandidate] = []
    for s in summaries:
        effort = config.reasoning_effort_of(s.model)
        if effort is None or s.graded <= 0 or s.avg_cost_usd is None:
            continue
        candidates.append(
            RoutingCandidate(
                model=s.model,
                reasoningEffort=effort,
                accuracy=s.accuracy,
                accuracyLowerBound=s.accuracy_lower_bound,
                avgCostUsd=s.avg_cost_usd,
                p95LatencyMs=s.p95_latency_ms,
                graded=s.graded,
                meetsThreshold=_meets(s, config),
                harness=s.harness or config.deciderHarness,
            )
        )
    above = sorted(
        (c for c in candidates if c.meetsThreshold),
        key=lambda c: (c.avgCostUsd, -c.accuracy, c.model),
    )
    below = sorted(
        (c for c in candidates if not c.meetsThreshold),
        key=lambda c: (-c.accuracy, c.avgCostUsd, c.model),
    )
    return above + below


def build_routing_table(
    summaries: Sequence[ModelSummary],
    *,
    config: BenchmarkConfig,
    run_id: str,
    published_at: str,
) -> RoutingTable | PublishSkipped:
    """The routing table of decider run ``run_id`` from its summaries and config snapshot.

    ``published_at`` is passed in (contracts read no clock). The table's version is the run
    id; minAccuracy, switchCostFactor and acceptance come from ``config``. Duplicate
    (model, tier) summaries are tolerated when identical; a measured summary wins over a
    carried one; two differing measured summaries are a caller bug (ValueError).
    """
    by_key: dict[tuple[str, Tier], list[ModelSummary]] = {}
    for s in summaries:
        by_key.setdefault((s.model, s.tier), []).append(s)
    per_tier: dict[Tier, list[ModelSummary]] = {t: [] for t in TIERS}
    for (_, tier), dupes in by_key.items():
        per_tier[tier].append(_pick_one(dupes))

    tiers = {t: tuple(rank_tier(per_tier[t], config)) for t in TIERS}
    empty = tuple(t for t in TIERS if not tiers[t])
    if empty:
        return PublishSkipped(
            empty_tiers=empty,
            reason=f"publish skipped: tier(s) {', '.join(empty)} have {_NO_CANDIDATE}",
        )
    return RoutingTable(
        version=run_id,
        published_at=published_at,
        minAccuracy=config.minAccuracy,
        switchCostFactor=config.switchCostFactor,
        acceptance=config.acceptance,
        tiers=tiers,
    )
