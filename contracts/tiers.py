"""Difficulty tier derivation: reasoning dominates, the other fields nudge borderline cases."""

from __future__ import annotations

from typing import Final

from contracts.classification import Classification
from contracts.taxonomy import ExecutionMode, Level, Tier

LEVEL_POINTS: Final[dict[Level, int]] = {"low": 0, "medium": 1, "high": 2}
EXECUTION_POINTS: Final[dict[ExecutionMode, int]] = {
    "single_turn": 0,
    "multi_step": 1,
    "autonomous": 2,
}
LOW_MAX: Final = 3
MEDIUM_MAX: Final = 6


def difficulty_score(
    reasoning: Level, context: Level, execution: ExecutionMode, risk: Level
) -> int:
    """`2*R + C + E + K`, each term 0/1/2: reasoning moves the score twice as far."""
    return (
        2 * LEVEL_POINTS[reasoning]
        + LEVEL_POINTS[context]
        + EXECUTION_POINTS[execution]
        + LEVEL_POINTS[risk]
    )


def tier_of_score(score: int) -> Tier:
    if score <= LOW_MAX:
        return "low"
    if score <= MEDIUM_MAX:
        return "medium"
    return "high"


def derive_tier(c: Classification) -> Tier:
    """The difficulty tier of a classification (low <= 3 < medium <= 6 < high)."""
    return tier_of_score(
        difficulty_score(c.reasoningComplexity, c.contextComplexity, c.executionMode, c.riskLevel)
    )
