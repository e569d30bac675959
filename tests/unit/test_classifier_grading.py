"""Classifier grading and tier-error analysis (contracts/classifier_grading.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.classification import CLASSIFICATION_FIELDS, Classification
from contracts.classifier_grading import (
    CLASSIFIER_FIELD_WEIGHTS,
    grade_classification,
    tier_error,
    tier_error_breakdown,
    tier_error_breakdowns,
)
from contracts.taxonomy import EXECUTION_MODES, LEVELS, TAXONOMY_PAIRS, TIERS
from contracts.tiers import derive_tier

BASE: dict[str, Any] = {
    "taskType": "debugging",
    "subtaskType": "bug_fix",
    "reasoningComplexity": "medium",
    "contextComplexity": "medium",
    "executionMode": "multi_step",
    "requiresTools": True,
    "riskLevel": "medium",
}


def cls(**overrides: Any) -> Classification:
    data = {**BASE, **overrides}
    if data.get("fallback") and "fallback_reason" not in data:
        data["fallback_reason"] = "unparseable output"
    return Classification(**data)


LOW = {
    "reasoningComplexity": "low",
    "contextComplexity": "low",
    "executionMode": "single_turn",
    "riskLevel": "low",
}  # score 0
MEDIUM = {
    "reasoningComplexity": "medium",
    "contextComplexity": "medium",
    "executionMode": "multi_step",
    "riskLevel": "low",
}  # score 4
HIGH = {
    "reasoningComplexity": "high",
    "contextComplexity": "high",
    "executionMode": "autonomous",
    "riskLevel": "high",
}  # score 8


classifications = st.builds(
    lambda pair, r, c, e, t, k: Classification(
        taskType=pair[0],
        subtaskType=pair[1],
        reasoningComplexity=r,
        contextComplexity=c,
        executionMode=e,
        requiresTools=t,
        riskLevel=k,
    ),
    st.sampled_from(TAXONOMY_PAIRS),
    st.sampled_from(LEVELS),
    st.sampled_from(LEVELS),
    st.sampled_from(EXECUTION_MODES),
    st.booleans(),
    st.sampled_from(LEVELS),
)


def as_fallback(c: Classification) -> Classification:
    return c.model_copy(update={"fallback": True, "fallback_reason": "heuristic"})


# --- weights -----------------------------------------------------------------------------


def test_weights_are_the_documented_ones() -> None:
    assert dict(CLASSIFIER_FIELD_WEIGHTS) == {
        "taskType": 0.25,
        "reasoningComplexity": 0.20,
        "contextComplexity": 0.15,
        "executionMode": 0.15,
        "subtaskType": 0.10,
        "requiresTools": 0.10,
        "riskLevel": 0.05,
    }


def test_weights_cover_every_field_and_sum_to_one() -> None:
    assert set(CLASSIFIER_FIELD_WEIGHTS) == set(CLASSIFICATION_FIELDS)
    assert math.fsum(CLASSIFIER_FIELD_WEIGHTS.values()) == 1.0


def test_weights_are_read_only() -> None:
    with pytest.raises(TypeError):
        CLASSIFIER_FIELD_WEIGHTS["taskType"] = 1.0  # type: ignore[index]


# --- grade_classification ----------------------------------------------------------------

GRADE_CASES = [
    # (name, predicted overrides, expected score, wrong fields)
    ("perfect", {}, 1.0, set()),
    (
        "taskType+subtaskType wrong",
        {"taskType": "refactoring", "subtaskType": "cleanup"},
        0.65,
        {"taskType", "subtaskType"},
    ),
    ("only subtaskType wrong", {"subtaskType": "performance"}, 0.90, {"subtaskType"}),
    ("reasoning wrong", {"reasoningComplexity": "high"}, 0.80, {"reasoningComplexity"}),
    ("context wrong", {"contextComplexity": "low"}, 0.85, {"contextComplexity"}),
    ("execution wrong", {"executionMode": "autonomous"}, 0.85, {"executionMode"}),
    ("tools wrong", {"requiresTools": False}, 0.90, {"requiresTools"}),
    ("risk wrong", {"riskLevel": "high"}, 0.95, {"riskLevel"}),
    (
        "all wrong",
        {
            "taskType": "planning_design",
            "subtaskType": "api_design",
            "reasoningComplexity": "low",
            "contextComplexity": "low",
            "executionMode": "single_turn",
            "requiresTools": False,
            "riskLevel": "low",
        },
        0.0,
        set(CLASSIFICATION_FIELDS),
    ),
    (
        "only taskType right",
        {
            "subtaskType": "performance",
            "reasoningComplexity": "low",
            "contextComplexity": "low",
            "executionMode": "single_turn",
            "requiresTools": False,
            "riskLevel": "low",
        },
        0.25,
        set(CLASSIFICATION_FIELDS) - {"taskType"},
    ),
]


@pytest.mark.parametrize(
    ("name", "overrides", "score", "wrong"), GRADE_CASES, ids=[c[0] for c in GRADE_CASES]
)
def test_grade_classification(
    name: str, overrides: dict[str, Any], score: float, wrong: set[str]
) -> None:
    grade = grade_classification(cls(**overrides), cls())
    assert grade.score == pytest.approx(score, abs=1e-12)
    assert {f for f, ok in grade.fields.items() if not ok} == wrong
    assert set(grade.fields) == set(CLASSIFICATION_FIELDS)
    assert grade.fallback is False


def test_partial_scores_are_free_of_float_noise() -> None:
    # taskType + reasoning right (0.45): a plain float sum gives 0.45000000000000007.
    predicted = cls(
        subtaskType="performance",
        contextComplexity="low",
        executionMode="single_turn",
        requiresTools=False,
        riskLevel="low",
    )
    assert grade_classification(predicted, cls()).score == 0.45


def test_fallback_scores_zero_even_when_identical() -> None:
    grade = grade_classification(cls(fallback=True), cls())
    assert grade.score == 0.0
    assert grade.fallback is True
    assert all(grade.fields.values())  # correctness still reported for diagnostics


def test_fallback_label_is_refused() -> None:
    with pytest.raises(ValueError):
        grade_classification(cls(), cls(fallback=True))


def test_correct_fields_in_weight_order() -> None:
    grade = grade_classification(
        cls(riskLevel="low", taskType="refactoring", subtaskType="cleanup"), cls()
    )
    assert grade.correct_fields == (
        "reasoningComplexity",
        "contextComplexity",
        "executionMode",
        "requiresTools",
    )


@given(classifications, classifications)
def test_score_is_sum_of_correct_weights(predicted: Classification, label: Classification) -> None:
    grade = grade_classification(predicted, label)
    assert 0.0 <= grade.score <= 1.0
    expected = math.fsum(
        w for f, w in CLASSIFIER_FIELD_WEIGHTS.items() if getattr(predicted, f) == getattr(label, f)
    )
    assert grade.score == pytest.approx(expected, abs=1e-12)
    assert grade_classification(as_fallback(predicted), label).score == 0.0


@given(classifications)
def test_self_grade_is_one(c: Classification) -> None:
    assert grade_classification(c, c).score == 1.0


# --- tier_error --------------------------------------------------------------------------

TIER_CASES = [
    ("low vs low", LOW, LOW, "exact"),
    ("low vs medium", LOW, MEDIUM, "under"),
    ("low vs high", LOW, HIGH, "under"),
    ("medium vs high", MEDIUM, HIGH, "under"),
    ("medium vs low", MEDIUM, LOW, "over"),
    ("high vs low", HIGH, LOW, "over"),
    ("high vs medium", HIGH, MEDIUM, "over"),
    ("high vs high", HIGH, HIGH, "exact"),
    # different fields, same derived tier: not a tier error
    ("same tier, different fields", {**MEDIUM, "riskLevel": "medium"}, MEDIUM, "exact"),
    # score 3 (low) vs 4 (medium): boundary
    ("boundary 3 vs 4", {**MEDIUM, "contextComplexity": "low"}, MEDIUM, "under"),
]


@pytest.mark.parametrize(
    ("name", "pred", "label", "expected"), TIER_CASES, ids=[c[0] for c in TIER_CASES]
)
def test_tier_error(name: str, pred: dict[str, Any], label: dict[str, Any], expected: str) -> None:
    assert tier_error(cls(**pred), cls(**label)) == expected


@given(classifications, classifications)
def test_tier_error_is_antisymmetric(a: Classification, b: Classification) -> None:
    flipped = {"under": "over", "over": "under", "exact": "exact"}
    assert tier_error(b, a) == flipped[tier_error(a, b)]


# --- tier_error_breakdown ----------------------------------------------------------------


def test_breakdown_counts_rates_and_matrix() -> None:
    pairs = [
        (cls(**LOW), cls(**HIGH)),  # under
        (cls(**LOW), cls(**MEDIUM)),  # under
        (cls(**HIGH), cls(**LOW)),  # over
        (cls(**MEDIUM), cls(**MEDIUM)),  # exact
        (cls(**LOW, fallback=True), cls(**HIGH)),  # fallback: own bucket
    ]
    b = tier_error_breakdown(pairs, model="sim/a")
    assert b.model == "sim/a"
    assert (b.total, b.under, b.over, b.exact, b.fallback) == (5, 2, 1, 1, 1)
    assert (b.under_rate, b.over_rate, b.exact_rate, b.fallback_rate) == (0.4, 0.2, 0.2, 0.2)
    assert b.confusion["high"]["low"] == 1
    assert b.confusion["medium"]["low"] == 1
    assert b.confusion["low"]["high"] == 1
    assert b.confusion["medium"]["medium"] == 1
    assert sum(sum(row.values()) for row in b.confusion.values()) == 4  # fallback excluded


def test_breakdown_of_nothing() -> None:
    b = tier_error_breakdown([])
    assert (b.total, b.under, b.over, b.exact, b.fallback) == (0, 0, 0, 0, 0)
    assert (b.under_rate, b.over_rate, b.exact_rate, b.fallback_rate) == (0.0, 0.0, 0.0, 0.0)
    assert set(b.confusion) == set(TIERS)
    assert all(set(row) == set(TIERS) and not any(row.values()) for row in b.confusion.values())


def test_all_fallback_is_not_a_tier_error() -> None:
    b = tier_error_breakdown([(cls(**LOW, fallback=True), cls(**HIGH))] * 3)
    assert (b.under, b.over, b.exact, b.fallback, b.fallback_rate) == (0, 0, 0, 3, 1.0)


def test_breakdowns_per_model() -> None:
    triples = [
        ("sim/b", cls(**LOW), cls(**HIGH)),
        ("sim/a", cls(**HIGH), cls(**HIGH)),
        ("sim/b", cls(**HIGH), cls(**HIGH)),
    ]
    result = tier_error_breakdowns(triples)
    assert list(result) == ["sim/a", "sim/b"]
    assert (result["sim/a"].exact, result["sim/a"].total) == (1, 1)
    assert (result["sim/b"].under, result["sim/b"].exact, result["sim/b"].model) == (1, 1, "sim/b")


@given(st.lists(st.tuples(classifications, classifications, st.booleans()), max_size=30))
def test_breakdown_invariants(items: list[tuple[Classification, Classification, bool]]) -> None:
    pairs = [(as_fallback(p) if fb else p, label) for p, label, fb in items]
    b = tier_error_breakdown(pairs)
    assert b.under + b.over + b.exact + b.fallback == b.total == len(pairs)
    matrix_total = sum(sum(row.values()) for row in b.confusion.values())
    assert matrix_total == b.under + b.over + b.exact
    rank = {t: i for i, t in enumerate(TIERS)}
    assert b.exact == sum(b.confusion[t][t] for t in TIERS)
    assert b.under == sum(
        n for lt, row in b.confusion.items() for pt, n in row.items() if rank[pt] < rank[lt]
    )
    if b.total:
        assert math.isclose(b.under_rate + b.over_rate + b.exact_rate + b.fallback_rate, 1.0)
    for p, label in pairs:
        if not p.fallback:
            assert b.confusion[derive_tier(label)][derive_tier(p)] >= 1
