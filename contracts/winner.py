"""Selection of the classifier winner from a classifier run's per-model statistics.

The classifier serves every tier, so it is judged over *all* its cases, not per tier: the
input is one :class:`ClassifierModelStats` per model. Rule (DESIGN.md, seed `winner.ts`):

1. ``cheapest_meeting_all``: the cheapest model whose accuracy reaches ``min_accuracy`` and
   whose p95 latency is within ``max_p95_latency_ms`` (no budget: accuracy alone);
2. ``lowest_p95_meeting_accuracy``: if models reach the accuracy but none fits the latency
   budget, the one with the lowest p95 — the budget is a preference, accuracy is not;
3. ``most_accurate``: if no model reaches the accuracy, the most accurate one.

The decide deadline (budget minus margin, ``decide_deadline_ms``) is not a preference: /decide
abandons a classifier call at it, so the latency budget is never looser than it, and a model
whose p95 exceeds it is only chosen when no model within it reaches the accuracy. Such a win
is named ``over_decide_deadline`` (rules 1-2) or ``most_accurate_over_decide_deadline``
(rule 3): the run says that /decide will time out on that classifier often.

Models with zero graded cases are ignored (no evidence). A model without a cost signal
sorts after every model with one (unknown is not free). Ties are broken deterministically;
see each rule's sort key.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.results import CaseOutcome, ModelSummary
from contracts.routing_table import ClassifierWinner
from contracts.summaries import dedupe_outcomes, meets_accuracy, nearest_rank_p95

WinnerReason = Literal[
    "cheapest_meeting_all",
    "lowest_p95_meeting_accuracy",
    "most_accurate",
    "over_decide_deadline",
    "most_accurate_over_decide_deadline",
]

_INF: Final = math.inf


class ClassifierModelStats(BaseModel):
    """One classifier model's aggregate over all its graded cases in a run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    accuracy: float = Field(ge=0.0, le=1.0)
    """Mean score over every graded case (all tiers)."""
    graded: int = Field(ge=0)
    """Number of graded (case, repetition) results."""
    avg_cost_usd: float | None = Field(default=None, ge=0.0)
    """Mean cost over the results that reported one; None when none did."""
    p95_latency_ms: float | None = Field(default=None, ge=0.0)
    """Nearest-rank p95 over every result's latency; None when unknown."""


def classifier_stats_from_outcomes(outcomes: Iterable[CaseOutcome]) -> list[ClassifierModelStats]:
    """Per-model stats over all of a model's outcomes (deduplicated), ordered by model id."""
    by_model: dict[str, list[CaseOutcome]] = defaultdict(list)
    for o in dedupe_outcomes(outcomes):
        by_model[o.model].append(o)
    stats: list[ClassifierModelStats] = []
    for model in sorted(by_model):
        group = by_model[model]
        costs = [o.cost_usd for o in group if o.cost_usd is not None]
        stats.append(
            ClassifierModelStats(
                model=model,
                accuracy=min(math.fsum(o.score for o in group) / len(group), 1.0),
                graded=len(group),
                avg_cost_usd=math.fsum(costs) / len(costs) if costs else None,
                p95_latency_ms=nearest_rank_p95(o.latency_ms for o in group),
            )
        )
    return stats


def classifier_stats_from_summaries(
    summaries: Iterable[ModelSummary],
) -> list[ClassifierModelStats]:
    """Per-model stats rebuilt from per-tier summaries (e.g. carried ones).

    Accuracy and cost are means weighted by graded count (cost over the tiers that report
    one — exact when every result in a tier has a cost). The exact all-cases p95 cannot be
    rebuilt from tier p95s, so the *largest* tier p95 is used: it is a proven upper bound
    of the overall nearest-rank p95, so a model that fits the budget here really fits.
    Prefer :func:`classifier_stats_from_outcomes` when outcomes are at hand.
    """
    by_model: dict[str, list[ModelSummary]] = defaultdict(list)
    for s in summaries:
        if s.graded > 0:
            by_model[s.model].append(s)
    stats: list[ClassifierModelStats] = []
    for model in sorted(by_model):
        group = by_model[model]
        graded = sum(s.graded for s in group)
        costed = [s for s in group if s.avg_cost_usd is not None]
        costed_n = sum(s.graded for s in costed)
        p95s = [s.p95_latency_ms for s in group if s.p95_latency_ms is not None]
        stats.append(
            ClassifierModelStats(
                model=model,
                accuracy=min(math.fsum(s.accuracy * s.graded for s in group) / graded, 1.0),
                graded=graded,
                avg_cost_usd=(
                    math.fsum(
                        s.avg_cost_usd * s.graded for s in costed if s.avg_cost_usd is not None
                    )
                    / costed_n
                    if costed_n
                    else None
                ),
                p95_latency_ms=max(p95s) if p95s else None,
            )
        )
    return stats


def _cost_key(s: ClassifierModelStats) -> tuple[bool, float]:
    """Known costs ascending, unknown after all of them."""
    return (s.avg_cost_usd is None, s.avg_cost_usd if s.avg_cost_usd is not None else _INF)


def _p95_key(s: ClassifierModelStats) -> tuple[bool, float]:
    return (s.p95_latency_ms is None, s.p95_latency_ms if s.p95_latency_ms is not None else _INF)


def _within_budget(s: ClassifierModelStats, budget: float | None) -> bool:
    # An unknown p95 cannot be shown to fit a budget.
    return budget is None or (s.p95_latency_ms is not None and s.p95_latency_ms <= budget)


def pick_classifier_winner(
    summaries: Iterable[ClassifierModelStats] | Iterable[ModelSummary],
    *,
    min_accuracy: float,
    max_p95_latency_ms: int | None,
    run_id: str,
    decide_deadline_ms: int | None = None,
) -> ClassifierWinner | None:
    """The classifier winner of run ``run_id``, or None when no model has graded cases.

    ``summaries`` are per-model :class:`ClassifierModelStats` (per-tier
    :class:`ModelSummary` items are accepted too and aggregated with
    :func:`classifier_stats_from_summaries`). Each model must appear once.

    Tie-breaks: cheapest rule — cost, then higher accuracy, then model id; lowest-p95 rule —
    p95, then cost, then higher accuracy, then model id; most-accurate rule — accuracy, then
    cost, then p95, then model id.
    """
    items = list(summaries)
    stats = [i for i in items if isinstance(i, ClassifierModelStats)]
    tier_summaries = [i for i in items if isinstance(i, ModelSummary)]
    stats.extend(classifier_stats_from_summaries(tier_summaries))
    models = [s.model for s in stats]
    if len(set(models)) != len(models):
        raise ValueError("pick_classifier_winner needs one stats entry per model")

    graded = [s for s in stats if s.graded > 0]
    if not graded:
        return None
    budgets = [b for b in (max_p95_latency_ms, decide_deadline_ms) if b is not None]
    budget = min(budgets) if budgets else None
    accurate = [s for s in graded if meets_accuracy(s.accuracy, min_accuracy)]
    in_time = [s for s in accurate if _within_budget(s, decide_deadline_ms)]
    reason: WinnerReason
    if in_time:
        fitting = [s for s in in_time if _within_budget(s, budget)]
        if fitting:
            reason = "cheapest_meeting_all"
            best = min(fitting, key=lambda s: (_cost_key(s), -s.accuracy, s.model))
        else:
            reason = "lowest_p95_meeting_accuracy"
            best = min(in_time, key=lambda s: (_p95_key(s), _cost_key(s), -s.accuracy, s.model))
    elif accurate:
        reason = "over_decide_deadline"
        best = min(accurate, key=lambda s: (_p95_key(s), _cost_key(s), -s.accuracy, s.model))
    else:
        best = min(graded, key=lambda s: (-s.accuracy, _cost_key(s), _p95_key(s), s.model))
        slow = not _within_budget(best, decide_deadline_ms)
        reason = "most_accurate_over_decide_deadline" if slow else "most_accurate"
    return ClassifierWinner(
        run_id=run_id,
        model=best.model,
        accuracy=best.accuracy,
        avgCostUsd=best.avg_cost_usd,
        p95LatencyMs=best.p95_latency_ms,
        reason=reason,
    )
