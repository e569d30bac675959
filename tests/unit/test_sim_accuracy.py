"""Each default-fleet model's measured accuracy over the datasets matches its declared
profile, and a benchmark over the fleet publishes the routing table and classifier winner
that fleet.yaml's comments compute.

Measured with the pure behaviour module (no HTTP, no containers): test_sim_behaviour proves
that the served answers realise these draws (a right draw passes its check / parses to the
label's values, a wrong one does not).
"""

from __future__ import annotations

import math
from functools import cache

import pytest

from contracts.cases import ClassifierCase, DeciderCase
from contracts.classification import CLASSIFICATION_FIELDS
from contracts.classifier_grading import CLASSIFIER_FIELD_WEIGHTS, grade_classification
from contracts.classifier_prompt import build_classifier_messages, classify_output
from contracts.config import BenchmarkConfig, DeciderModel
from contracts.results import CaseOutcome
from contracts.routing_builder import build_routing_table
from contracts.routing_table import RoutingTable
from contracts.summaries import summarize
from contracts.taxonomy import TIERS, Tier
from contracts.tiers import derive_tier
from contracts.winner import classifier_stats_from_outcomes, pick_classifier_winner
from simulator import behaviour
from simulator.catalog import classifier_case_hash, decider_case_hash, load_cases
from simulator.completions import completion_response
from simulator.fleet import Fleet, ModelProfile, load_fleet

REPS = (0, 1, 2)
Z = 3.5
"""Tolerance in standard errors. ~3 SE per comparison; 3.5 keeps the family-wise false
alarm rate of the ~60 comparisons (6 models x (7 fields + 3 tiers)) near 3% when a
dataset edit reshuffles the draws, while a misdeclared rate is still caught (see
test_the_check_catches_a_misdeclared_profile)."""

FLEET_IDS = [m.id for m in load_fleet().models]


@cache
def fleet() -> Fleet:
    return load_fleet()


@cache
def cases() -> tuple[list[ClassifierCase], list[DeciderCase]]:
    classifier, decider = load_cases()
    assert classifier, "the classifier dataset has no cases"
    assert decider, "the decider dataset has no cases"
    return classifier, decider


def within(measured: float, declared: float, n: int, z: float = Z) -> bool:
    se = math.sqrt(declared * (1 - declared) / n)
    return abs(measured - declared) <= z * se + 1e-9


def measured_classifier(profile: ModelProfile) -> tuple[dict[str, float], int]:
    classifier, _ = cases()
    hits = dict.fromkeys(CLASSIFICATION_FIELDS, 0)
    n = 0
    for case in classifier:
        digest = classifier_case_hash(case)
        for rep in REPS:
            draw = behaviour.classifier_draw(profile, digest, rep)
            n += 1
            for f, ok in draw.correct.items():
                hits[f] += ok
    return {f: hits[f] / n for f in CLASSIFICATION_FIELDS}, n


def measured_decider(profile: ModelProfile) -> dict[Tier, tuple[float, int]]:
    _, decider = cases()
    out: dict[Tier, tuple[float, int]] = {}
    for tier in TIERS:
        draws = [
            behaviour.decider_draw(profile, decider_case_hash(c), tier, rep).correct
            for c in decider
            if c.tier == tier
            for rep in REPS
        ]
        if draws:
            out[tier] = (sum(draws) / len(draws), len(draws))
    return out


@pytest.mark.parametrize("model", FLEET_IDS)
def test_measured_classifier_accuracy_matches_declared(model: str) -> None:
    profile = fleet().get(model)
    assert profile is not None
    measured, n = measured_classifier(profile)
    for f in CLASSIFICATION_FIELDS:
        declared = profile.classifier.of(f)
        assert within(measured[f], declared, n), (
            f"{model} {f}: measured {measured[f]:.3f} over {n} draws, declared {declared}"
        )


@pytest.mark.parametrize("model", FLEET_IDS)
def test_measured_decider_accuracy_matches_declared(model: str) -> None:
    profile = fleet().get(model)
    assert profile is not None
    measured = measured_decider(profile)
    assert set(measured) == set(TIERS), "the decider dataset lacks a tier"
    for tier, (acc, n) in measured.items():
        declared = profile.decider.of(tier)
        assert within(acc, declared, n), (
            f"{model} {tier}: measured {acc:.3f} over {n} draws, declared {declared}"
        )


def test_the_check_catches_a_misdeclared_profile() -> None:
    """The same draws compared with a rate 0.15 off fail the check: it has teeth."""
    profile = fleet().get("sim/balanced")
    assert profile is not None
    measured, n = measured_classifier(profile)
    assert not within(measured["taskType"], profile.classifier.taskType - 0.15, n)
    acc, n_med = measured_decider(profile)["medium"]
    assert not within(acc, profile.decider.medium - 0.25, n_med)


@pytest.mark.parametrize("model", FLEET_IDS)
def test_draws_match_declared_rates_on_a_large_synthetic_sample(model: str) -> None:
    """Independent of the datasets' size: 6000 synthetic keys, 4 SE."""
    profile = fleet().get(model)
    assert profile is not None
    n = 6000
    keys = [f"synthetic-{i}" for i in range(n)]
    for tier in TIERS:
        acc = sum(behaviour.decider_draw(profile, k, tier, 0).correct for k in keys) / n
        assert within(acc, profile.decider.of(tier), n, z=4), (tier, acc)
    draws = [behaviour.classifier_draw(profile, k, 0) for k in keys]
    for f in CLASSIFICATION_FIELDS:
        acc = sum(d.correct[f] for d in draws) / n
        assert within(acc, profile.classifier.of(f), n, z=4), (f, acc)


# -- the benchmark over the default fleet --------------------------------------------------


def _cost(profile: ModelProfile, messages: list[dict[str, str]], plan: behaviour.Plan) -> float:
    usage = completion_response(profile, {"messages": messages}, plan, "h", 0, 0)["usage"]
    return float(usage["cost"])


def decider_table(reps: int, acceptance: str = "point") -> RoutingTable:
    _, decider = cases()
    outcomes = []
    for profile in fleet().models:
        for case in decider:
            digest = decider_case_hash(case)
            messages = [{"role": "user", "content": case.prompt}]
            for rep in range(reps):
                plan = behaviour.plan_decider(profile, case, digest, rep, 0, None, [])
                outcomes.append(
                    CaseOutcome(
                        model=profile.id,
                        case_id=case.id,
                        rep=rep,
                        tier=case.tier,
                        score=float(
                            behaviour.decider_draw(profile, digest, case.tier, rep).correct
                        ),
                        latency_ms=0.0,
                        cost_usd=_cost(profile, messages, plan),
                    )
                )
    config = BenchmarkConfig(
        classifierModels=tuple(FLEET_IDS),
        deciderModels=tuple(DeciderModel(model=m) for m in FLEET_IDS),
        minAccuracy=0.7,
        acceptance=acceptance,  # type: ignore[arg-type]
    )
    table = build_routing_table(
        summarize(outcomes), config=config, run_id="run-sim", published_at="2025-01-01T00:00:00Z"
    )
    assert isinstance(table, RoutingTable), table
    return table


@pytest.mark.parametrize(("reps", "acceptance"), [(1, "point"), (3, "point"), (3, "lower_bound")])
def test_default_fleet_routes_each_tier_to_a_different_model(reps: int, acceptance: str) -> None:
    table = decider_table(reps, acceptance)
    firsts = {tier: table.tiers[tier][0].model for tier in TIERS}
    assert firsts == {"low": "sim/flash-lite", "medium": "sim/balanced", "high": "sim/reasoner"}
    for tier in TIERS:
        assert table.tiers[tier][0].meetsThreshold


def test_default_fleet_classifier_winner_is_neither_cheapest_nor_most_accurate() -> None:
    classifier, _ = cases()
    outcomes = []
    for profile in fleet().models:
        for case in classifier:
            digest = classifier_case_hash(case)
            messages = build_classifier_messages(list(case.messages))
            for rep in REPS:
                plan = behaviour.plan_classifier(profile, case.label, digest, rep)
                predicted = classify_output(plan.text or "", list(case.messages))
                outcomes.append(
                    CaseOutcome(
                        model=profile.id,
                        case_id=case.id,
                        rep=rep,
                        tier=derive_tier(case.label),
                        score=grade_classification(predicted, case.label).score,
                        latency_ms=0.0,
                        cost_usd=_cost(profile, messages, plan),
                    )
                )
    stats = classifier_stats_from_outcomes(outcomes)
    winner = pick_classifier_winner(stats, min_accuracy=0.7, max_p95_latency_ms=None, run_id="r")
    assert winner is not None
    cheapest = min(stats, key=lambda s: s.avg_cost_usd or 0.0)
    most_accurate = max(stats, key=lambda s: s.accuracy)
    assert winner.model == "sim/balanced", stats
    assert winner.reason == "cheapest_meeting_all"
    assert cheapest.model == "sim/tiny" and most_accurate.model == "sim/frontier"
    # measured weighted scores are near the expected ones fleet.yaml's comments compute
    for s in stats:
        declared = fleet().get(s.model)
        assert declared is not None
        expected = declared.classifier_score(dict(CLASSIFIER_FIELD_WEIGHTS))
        assert abs(s.accuracy - expected) < 0.08, (s.model, s.accuracy, expected)
