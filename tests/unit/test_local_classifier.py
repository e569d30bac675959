"""Local classifiers: first-class classifier candidates that run in-process (issue 17).

The keyword heuristic is registered as `local/heuristic`; a pip package can add its own
through an entry point; the one classification call (`infra.classifier_call`) serves them
without a provider call, at cost 0, for the benchmark and /decide alike."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from contracts.classifier_grading import grade_classification
from contracts.classifier_heuristic import heuristic_classification
from contracts.config import BenchmarkConfig, DeciderModel
from contracts.local_classifier import KeywordHeuristic, is_local
from datasets.loader import load_classifier_cases
from infra import local_classifiers
from infra.classifier_call import call_classifier
from tests.unit.test_decide_service import cand, make, table, user

MESSAGES = [{"role": "user", "content": "Fix the crash in the login handler: KeyError 'id'"}]


class NoProvider:
    """Fails the test if anything reaches the provider."""

    calls = 0

    async def chat(self, **kw: Any) -> Any:
        NoProvider.calls += 1
        raise AssertionError(f"a local classifier called the provider: {kw.get('model')}")


def test_the_heuristic_candidate_is_the_fallback_without_the_fallback_mark() -> None:
    got = KeywordHeuristic().classify(MESSAGES)
    fallback = heuristic_classification(MESSAGES, reason="x")
    assert got.fallback is False and got.fallback_reason is None
    assert got.model_dump(exclude={"fallback", "fallback_reason"}) == fallback.model_dump(
        exclude={"fallback", "fallback_reason"}
    )


async def test_a_local_call_costs_nothing_and_never_reaches_the_provider() -> None:
    call = await call_classifier(NoProvider(), "local/heuristic", MESSAGES, timeout_s=1.0)
    assert NoProvider.calls == 0
    assert call.classification is not None and call.classification.fallback is False
    assert (call.cost_usd, call.attempts, call.timed_out, call.error) == (0.0, 1, False, None)
    assert call.latency_ms >= 0.0


async def test_an_unknown_local_classifier_is_an_error_not_a_provider_call() -> None:
    call = await call_classifier(NoProvider(), "local/nope", MESSAGES, timeout_s=1.0)
    assert call.classification is None and call.error is not None
    assert "no local classifier 'local/nope'" in str(call.error)
    assert "local/heuristic" in str(call.error)


def test_it_is_graded_on_the_same_cases_like_any_candidate() -> None:
    """The benchmark grades its answers with the same weights; it is no oracle."""
    cases = load_classifier_cases()
    scores = [
        grade_classification(KeywordHeuristic().classify(c.messages), c.label).score for c in cases
    ]
    assert len(scores) == 72
    assert 0.0 < sum(scores) / len(scores) < 1.0


def test_a_local_model_is_a_classifier_only() -> None:
    ok = BenchmarkConfig(
        classifierModels=("local/heuristic", "sim/tiny"),
        deciderModels=(DeciderModel(model="sim/tiny", reasoningEffort="low"),),
    )
    assert is_local(ok.classifierModels[0])
    with pytest.raises(ValueError, match="local classifiers cannot be decider models"):
        BenchmarkConfig(
            classifierModels=("sim/tiny",),
            deciderModels=(DeciderModel(model="local/heuristic", reasoningEffort="low"),),
        )


def test_a_pip_package_adds_one_through_an_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_router_plugin.py").write_text(
        textwrap.dedent(
            """
            from contracts.local_classifier import KeywordHeuristic

            class Always(KeywordHeuristic):
                name = "local/always-debugging"

            class Misnamed(KeywordHeuristic):
                name = "not-local"
            """
        )
    )
    dist = tmp_path / "my_router_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-router-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[provenroute.local_classifiers]\n"
        "always = my_router_plugin:Always\n"
        "misnamed = my_router_plugin:Misnamed\n"
        "broken = my_router_plugin:DoesNotExist\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    local_classifiers.registry.cache_clear()
    try:
        found = local_classifiers.registry()
        assert "local/always-debugging" in found and "local/heuristic" in found
        assert "not-local" not in found  # must carry the local/ prefix
    finally:
        local_classifiers.registry.cache_clear()
        sys.modules.pop("my_router_plugin", None)


async def test_decide_classifies_in_process_when_a_local_classifier_is_chosen() -> None:
    service, rm, _sessions, provider, emitter = make({})
    rm.table = table("v1", [cand("m/low", 0.01)])
    rm.override = "local/heuristic"
    await service.live.reload()
    out = await service.decide("c1", user("Fix the crash in the login handler: KeyError 'id'"))
    assert provider.calls == []
    assert out["model"] == "m/low" and out["nullReason"] is None
    assert (out["classifierModel"], out["classifierCostUsd"]) == ("local/heuristic", 0.0)
    assert out["classification"]["fallback"] is False
    assert emitter.sent, "the decision is logged like any other"
