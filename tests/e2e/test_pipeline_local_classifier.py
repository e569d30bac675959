"""A classifier run on real Kafka with a local classifier beside a SIMULATED LLM: the local
candidate is graded on the same 72 cases through the worker, at cost 0 and its real latency,
and the winner rule treats it like any candidate (issue 17)."""

from __future__ import annotations

import pytest

from contracts.classifier_grading import grade_classification
from contracts.config import BenchmarkConfig
from contracts.events import ClassifierWinnerPublished
from contracts.local_classifier import KeywordHeuristic
from contracts.tiers import derive_tier
from datasets.loader import load_classifier_cases
from tests.e2e.conftest import Pipeline

CONFIG = BenchmarkConfig.model_validate(
    {
        "classifierModels": ["local/heuristic", "sim/flash-lite"],
        "deciderModels": [{"model": "sim/flash-lite", "reasoningEffort": "low"}],
        "minAccuracy": 0.7,
        "classifierRepetitions": 1,
        "classifierMaxP95LatencyMs": None,
        "benchmarkIdentity": "sim-benchmark",
    }
)


def test_the_local_classifier_is_measured_beside_the_llm(pipeline: Pipeline) -> None:
    pipeline.save_config(CONFIG)
    run = pipeline.run(pipeline.start_run("classifier"))

    cases = load_classifier_cases()
    local = {e.case_id: e for e in run.graded if e.model == "local/heuristic"}
    assert len(local) == len(cases) == 72
    for case in cases:
        got = local[case.id]
        want = grade_classification(KeywordHeuristic().classify(case.messages), case.label)
        assert got.score == pytest.approx(want.score), case.id
        assert got.cost_usd == 0.0 and not got.timed_out
        assert got.latency_ms > 0.0

    for (model, tier), s in run.summaries.items():
        if model != "local/heuristic":
            continue
        in_tier = [c for c in cases if derive_tier(c.label) == tier]
        assert s.summary.graded == len(in_tier)
        assert s.summary.avg_cost_usd == 0.0
        assert s.summary.p95_latency_ms is not None

    # The winner rule treats it like any candidate: it is the cheapest, so it wins exactly
    # when it clears the accuracy threshold.
    winner = run.one(ClassifierWinnerPublished).winner
    local_accuracy = sum(e.score for e in local.values()) / len(local)
    assert local_accuracy < CONFIG.minAccuracy, "the keyword heuristic is no match for an LLM"
    assert winner.model == "sim/flash-lite"

    # Below a threshold it clears, the free candidate wins (its results are carried: the
    # re-run republishes at once, with zero spend).
    lenient = CONFIG.model_copy(update={"minAccuracy": round(local_accuracy - 0.05, 2)})
    pipeline.save_config(lenient)
    again = pipeline.run(pipeline.start_run("classifier"))
    assert again.one(ClassifierWinnerPublished).winner.model == "local/heuristic"
