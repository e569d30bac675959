"""Taxonomy shape and the tier rule: monotone, reasoning weighs double, fixed boundaries."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts.classification import Classification
from contracts.taxonomy import (
    EXECUTION_MODES,
    LEVELS,
    SUBTASK_TYPES,
    SUBTYPES_BY_TASK,
    TASK_OF_SUBTYPE,
    TASK_TYPES,
    TAXONOMY_PAIRS,
    subtype_belongs,
)
from contracts.tiers import derive_tier, difficulty_score, tier_of_score

LABEL: dict[str, Any] = {
    "taskType": "debugging",
    "subtaskType": "bug_fix",
    "reasoningComplexity": "low",
    "contextComplexity": "low",
    "executionMode": "single_turn",
    "requiresTools": False,
    "riskLevel": "low",
}


def test_eighteen_pairs_three_per_task() -> None:
    assert len(TAXONOMY_PAIRS) == 18
    assert len(set(TAXONOMY_PAIRS)) == 18
    assert len(TASK_TYPES) == 6
    assert all(len(SUBTYPES_BY_TASK[t]) == 3 for t in TASK_TYPES)
    assert sorted(s for _, s in TAXONOMY_PAIRS) == sorted(SUBTASK_TYPES)
    assert all(TASK_OF_SUBTYPE[s] == t for t, s in TAXONOMY_PAIRS)


@pytest.mark.parametrize(("task", "subtask"), TAXONOMY_PAIRS)
def test_every_pair_is_a_valid_classification(task: str, subtask: str) -> None:
    c = Classification.model_validate({**LABEL, "taskType": task, "subtaskType": subtask})
    assert (c.taskType, c.subtaskType) == (task, subtask)


@pytest.mark.parametrize(
    ("task", "subtask"),
    [(t, s) for t in TASK_TYPES for s in SUBTASK_TYPES if not subtype_belongs(t, s)],
)
def test_subtype_of_another_task_is_invalid(task: str, subtask: str) -> None:
    with pytest.raises(ValidationError, match="does not belong to taskType"):
        Classification.model_validate({**LABEL, "taskType": task, "subtaskType": subtask})


def test_fallback_needs_a_reason() -> None:
    with pytest.raises(ValidationError, match="fallback_reason"):
        Classification.model_validate({**LABEL, "fallback": True})


levels = st.sampled_from(LEVELS)
modes = st.sampled_from(EXECUTION_MODES)
FIELDS = ("reasoning", "context", "execution", "risk")


def _raise(value: str, field: str) -> str | None:
    """The next level up of `value` in `field`'s scale, or None at the top."""
    scale = EXECUTION_MODES if field == "execution" else LEVELS
    i = scale.index(value)  # type: ignore[arg-type]
    return scale[i + 1] if i + 1 < len(scale) else None


@given(r=levels, c=levels, e=modes, k=levels, field=st.sampled_from(FIELDS))
def test_one_step_up_moves_score_by_weight_and_tier_never_down(
    r: Any, c: Any, e: Any, k: Any, field: str
) -> None:
    args = {"reasoning": r, "context": c, "execution": e, "risk": k}
    up = _raise(args[field], field)
    if up is None:
        return
    raised = {**args, field: up}
    before, after = difficulty_score(**args), difficulty_score(**raised)
    assert after - before == (2 if field == "reasoning" else 1)
    order = ("low", "medium", "high")
    assert order.index(tier_of_score(after)) >= order.index(tier_of_score(before))


@given(r=levels, c=levels, e=modes, k=levels)
def test_derive_tier_matches_score(r: Any, c: Any, e: Any, k: Any) -> None:
    label = Classification.model_validate(
        {
            **LABEL,
            "reasoningComplexity": r,
            "contextComplexity": c,
            "executionMode": e,
            "riskLevel": k,
        }
    )
    assert derive_tier(label) == tier_of_score(difficulty_score(r, c, e, k))
    assert 0 <= difficulty_score(r, c, e, k) <= 10


@pytest.mark.parametrize(
    ("score", "tier"),
    [(0, "low"), (3, "low"), (4, "medium"), (6, "medium"), (7, "high"), (10, "high")],
)
def test_tier_boundaries(score: int, tier: str) -> None:
    assert tier_of_score(score) == tier


def test_extremes() -> None:
    assert difficulty_score("low", "low", "single_turn", "low") == 0
    assert difficulty_score("high", "high", "autonomous", "high") == 10
    # Reasoning alone at high reaches medium; everything else at max without it stays medium.
    assert tier_of_score(difficulty_score("high", "low", "single_turn", "low")) == "medium"
    assert tier_of_score(difficulty_score("low", "high", "autonomous", "high")) == "medium"
