"""Grading of classifier answers against hand labels, and tier-error analysis.

A classifier answer is graded field by field with :data:`CLASSIFIER_FIELD_WEIGHTS`. A
heuristic-fallback answer scores 0 whatever it happens to get right: the benchmark measures
the model, and a fallback means the model's own output was unusable.

Tier errors say what a misclassification costs in routing terms: *under*-tiering (the
predicted classification derives a lower tier than the label's) sends a hard request to a
model proven only on easier ones, a quality risk; *over*-tiering pays for a stronger model
than needed, wasted cost.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.classification import Classification
from contracts.taxonomy import TIERS, Tier
from contracts.tiers import derive_tier

CLASSIFIER_FIELD_WEIGHTS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "taskType": 0.25,
        "reasoningComplexity": 0.20,
        "contextComplexity": 0.15,
        "executionMode": 0.15,
        "subtaskType": 0.10,
        "requiresTools": 0.10,
        "riskLevel": 0.05,
    }
)
"""Per-field weight of a classifier answer; the weights sum to 1.0."""

TierError = Literal["under", "over", "exact"]

_TIER_RANK: Final[dict[Tier, int]] = {t: i for i, t in enumerate(TIERS)}


class FieldGrade(BaseModel):
    """The grade of one classifier answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    score: float = Field(ge=0.0, le=1.0)
    """Sum of the weights of the correct fields; 0 for a fallback prediction."""
    fields: dict[str, bool]
    """Per field (all seven): whether the prediction equals the label. Reported honestly
    even for a fallback, for diagnostics; only the score is forced to 0."""
    fallback: bool = False
    """True when the prediction came from the heuristic fallback."""

    @property
    def correct_fields(self) -> tuple[str, ...]:
        """The fields the prediction got right, in weight order."""
        return tuple(f for f in CLASSIFIER_FIELD_WEIGHTS if self.fields[f])


def grade_classification(predicted: Classification, label: Classification) -> FieldGrade:
    """Grade ``predicted`` against the hand ``label`` (score in [0, 1])."""
    if label.fallback:
        raise ValueError("a hand label cannot be a fallback classification")
    fields = {f: getattr(predicted, f) == getattr(label, f) for f in CLASSIFIER_FIELD_WEIGHTS}
    if predicted.fallback:
        return FieldGrade(score=0.0, fields=fields, fallback=True)
    raw = math.fsum(w for f, w in CLASSIFIER_FIELD_WEIGHTS.items() if fields[f])
    # Rounding removes float noise so that e.g. taskType + reasoning is exactly 0.45.
    return FieldGrade(score=min(round(raw, 12), 1.0), fields=fields)


def tier_error(predicted: Classification, label: Classification) -> TierError:
    """Compare the tiers derived from ``predicted`` and ``label``.

    ``under``: predicted tier below the label's (quality risk); ``over``: above it (wasted
    cost); ``exact``: equal. Fields are compared through the tier rule only, so a wrong
    classification can still be tier-exact.
    """
    diff = _TIER_RANK[derive_tier(predicted)] - _TIER_RANK[derive_tier(label)]
    if diff < 0:
        return "under"
    if diff > 0:
        return "over"
    return "exact"


def _empty_matrix() -> dict[Tier, dict[Tier, int]]:
    return {lt: dict.fromkeys(TIERS, 0) for lt in TIERS}


class TierErrorBreakdown(BaseModel):
    """Tier errors of one model's answers.

    Fallback predictions are their own bucket: they are not tier errors (they are graded 0
    anyway) and they stay out of the confusion matrix, so
    ``under + over + exact + fallback == total`` and the matrix sums to
    ``under + over + exact``. Rates are shares of ``total`` (0.0 when total is 0), so the
    four rates sum to 1 for a non-empty breakdown.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = None
    """The model the answers came from, when the caller says."""
    total: int = Field(ge=0)
    under: int = Field(ge=0)
    over: int = Field(ge=0)
    exact: int = Field(ge=0)
    fallback: int = Field(ge=0)
    under_rate: float = Field(ge=0.0, le=1.0)
    over_rate: float = Field(ge=0.0, le=1.0)
    exact_rate: float = Field(ge=0.0, le=1.0)
    fallback_rate: float = Field(ge=0.0, le=1.0)
    confusion: dict[Tier, dict[Tier, int]] = Field(default_factory=_empty_matrix)
    """``confusion[label_tier][predicted_tier]``: counts of non-fallback answers; every
    tier is present in both dimensions (zeros included)."""


def tier_error_breakdown(
    pairs: Iterable[tuple[Classification, Classification]], *, model: str | None = None
) -> TierErrorBreakdown:
    """Tier-error counts, rates and confusion matrix of ``(predicted, label)`` pairs."""
    counts: dict[str, int] = {"under": 0, "over": 0, "exact": 0, "fallback": 0}
    matrix = _empty_matrix()
    for predicted, label in pairs:
        if predicted.fallback:
            counts["fallback"] += 1
            continue
        counts[tier_error(predicted, label)] += 1
        matrix[derive_tier(label)][derive_tier(predicted)] += 1
    total = sum(counts.values())

    def rate(k: str) -> float:
        return counts[k] / total if total else 0.0

    return TierErrorBreakdown(
        model=model,
        total=total,
        under=counts["under"],
        over=counts["over"],
        exact=counts["exact"],
        fallback=counts["fallback"],
        under_rate=rate("under"),
        over_rate=rate("over"),
        exact_rate=rate("exact"),
        fallback_rate=rate("fallback"),
        confusion=matrix,
    )


def tier_error_breakdowns(
    triples: Iterable[tuple[str, Classification, Classification]],
) -> dict[str, TierErrorBreakdown]:
    """Per model: :func:`tier_error_breakdown` of ``(model, predicted, label)`` triples,
    keyed and ordered by model id."""
    by_model: dict[str, list[tuple[Classification, Classification]]] = {}
    for model, predicted, label in triples:
        by_model.setdefault(model, []).append((predicted, label))
    return {m: tier_error_breakdown(by_model[m], model=m) for m in sorted(by_model)}
