"""Fold graded case outcomes into per-(model, tier) summaries; carry summaries between runs.

Everything here is pure: the event log delivers at least once and a replay may interleave
partitions differently, so the same log must always give the same summaries, bit for bit.
Two things make that true:

* duplicates are collapsed by their natural key ``(model, case_id, rep)`` (the key a case
  result's deterministic event id is derived from) before anything is counted, keeping the
  *first by log order* — the one rule the aggregator and the projector share. A run's
  results all sit on one partition (keyed by run id), so that order is the same on every
  replay;
* sums use :func:`math.fsum`, which is correctly rounded and therefore independent of the
  order the values arrive in (a plain ``sum`` of floats is not).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from statistics import NormalDist
from typing import Final

from contracts.results import CaseOutcome, ModelSummary
from contracts.taxonomy import TIERS, Tier

ACCURACY_TOLERANCE: Final = 1e-9
"""Slack when comparing a computed accuracy with a threshold.

A mean of weighted scores carries float noise (0.7 can come out as 0.6999999999999999);
a model exactly at the threshold must not be rejected for it."""

_TIER_ORDER: Final[dict[Tier, int]] = {t: i for i, t in enumerate(TIERS)}

OutcomeKey = tuple[str, str, int]
"""(model, case_id, rep): one graded result per key."""


def meets_accuracy(value: float, threshold: float) -> bool:
    """``value >= threshold`` up to :data:`ACCURACY_TOLERANCE` of float noise."""
    return value >= threshold - ACCURACY_TOLERANCE


def nearest_rank(values: Iterable[float], percent: int) -> float | None:
    """Nearest-rank percentile: the ``ceil(percent/100 * n)``-th smallest value.

    Integer arithmetic picks the rank, so 95% of 100 values is exactly rank 95 (a float
    ``0.95 * n`` can land a hair above an integer and round up one rank). Empty -> None.
    """
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return None
    rank = -(-percent * n // 100)  # ceil(percent * n / 100) without floats
    return float(ordered[max(rank, 1) - 1])


def nearest_rank_p95(values: Iterable[float]) -> float | None:
    """Nearest-rank p95: the ``ceil(0.95 * n)``-th smallest value; None when empty."""
    return nearest_rank(values, 95)


def wilson_lower_bound(successes: float, n: int, confidence: float = 0.95) -> float:
    """Lower bound of the Wilson score interval for a success rate of ``successes / n``.

    ``successes`` may be fractional (a sum of partial scores in [0, 1]). ``z`` is the
    two-sided critical value for ``confidence`` (1.959964... at 0.95), from
    :class:`statistics.NormalDist`. ``n == 0`` -> 0.0: no evidence proves nothing.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return 0.0
    if successes < -ACCURACY_TOLERANCE or successes > n + ACCURACY_TOLERANCE:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    p = min(max(successes / n, 0.0), 1.0)
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    z2 = z * z
    centre = p + z2 / (2 * n)
    margin = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n))
    bound = (centre - margin) / (1.0 + z2 / n)
    # At p == 0 the two terms cancel to within one ulp; never report a negative rate.
    return min(max(bound, 0.0), 1.0)


def dedupe_outcomes(outcomes: Iterable[CaseOutcome]) -> list[CaseOutcome]:
    """One outcome per ``(model, case_id, rep)``: the first in the given (log) order, sorted by
    that key.

    Redelivered duplicates are normally identical. Should two copies differ (a job re-run
    after a crash measured the case again), the first one on the log wins, as in the
    projector's ``case_results`` (insert, on conflict do nothing): the summaries and the
    rows they link to then describe the same measurement.
    """
    kept: dict[OutcomeKey, CaseOutcome] = {}
    for o in outcomes:
        kept.setdefault((o.model, o.case_id, o.rep), o)
    return [kept[k] for k in sorted(kept)]


def _summary(
    model: str, tier: Tier, group: Sequence[CaseOutcome], confidence: float
) -> ModelSummary:
    n = len(group)
    total_score = math.fsum(o.score for o in group)
    costs = [o.cost_usd for o in group if o.cost_usd is not None]
    return ModelSummary(
        model=model,
        tier=tier,
        accuracy=min(total_score / n, 1.0),
        accuracy_lower_bound=wilson_lower_bound(min(total_score, n), n, confidence),
        graded=n,
        avg_cost_usd=math.fsum(costs) / len(costs) if costs else None,
        p95_latency_ms=nearest_rank_p95(o.latency_ms for o in group),
        timeouts=sum(1 for o in group if o.timed_out),
    )


def summarize(outcomes: Iterable[CaseOutcome], *, confidence: float = 0.95) -> list[ModelSummary]:
    """Per (model, tier) summaries of one run's graded outcomes.

    * ``graded``: distinct ``(case_id, rep)`` results; a timed-out case is a graded failure
      (its score, normally 0, counts) and is also counted in ``timeouts``.
    * ``accuracy``: mean score; ``accuracy_lower_bound``: Wilson lower bound at
      ``confidence`` with the score sum as (fractional) successes.
    * ``avg_cost_usd``: mean over the results that reported a cost; None if none did
      (a missing cost is unknown, not free, so it must not drag the mean to 0).
    * ``p95_latency_ms``: nearest-rank p95 over every result's latency.

    Ordered by model id, then tier (low, medium, high). Only (model, tier) pairs with at
    least one outcome get a summary.
    """
    groups: dict[tuple[str, Tier], list[CaseOutcome]] = defaultdict(list)
    for o in dedupe_outcomes(outcomes):
        groups[(o.model, o.tier)].append(o)
    keys = sorted(groups, key=lambda k: (k[0], _TIER_ORDER[k[1]]))
    return [_summary(model, tier, groups[(model, tier)], confidence) for model, tier in keys]


def carry_summaries(previous: Sequence[ModelSummary], source_run_id: str) -> list[ModelSummary]:
    """Copy a model's earlier summaries into a new run without re-running it.

    Each copy is marked ``carried=True``. ``source_run_id`` names the run that *measured* the
    numbers: a summary that was itself carried keeps its original source, so a chain of
    config-only republishes still points at the real measurement. Input order is kept.
    """
    carried: list[ModelSummary] = []
    for s in previous:
        source = s.source_run_id if s.carried and s.source_run_id else source_run_id
        carried.append(s.model_copy(update={"carried": True, "source_run_id": source}))
    return carried
