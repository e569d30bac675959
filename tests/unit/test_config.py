"""BenchmarkConfig ranges and defaults; RoutingTable refuses an empty tier."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from contracts.config import BenchmarkConfig, DeciderModel
from contracts.routing_table import RoutingCandidate, RoutingTable

MINIMAL: dict[str, Any] = {
    "classifierModels": ["sim/classify-mini"],
    "deciderModels": [{"model": "sim/swift-mini"}],
}


def _error_locs(exc: ValidationError) -> list[tuple[str | int, ...]]:
    return [tuple(e["loc"]) for e in exc.errors()]


def test_defaults() -> None:
    c = BenchmarkConfig.model_validate(MINIMAL)
    assert c.minAccuracy == 0.7
    assert c.switchCostFactor == 3.0
    assert c.maxConcurrency == 4
    assert c.classifierRepetitions == 1
    assert c.deciderRepetitions == 1
    assert c.classifierMaxP95LatencyMs == 1000
    assert c.acceptance == "point"
    assert c.benchmarkIdentity is None
    assert c.deciderModels == (DeciderModel(model="sim/swift-mini", reasoningEffort="medium"),)
    assert c.reasoning_effort_of("sim/swift-mini") == "medium"
    assert c.reasoning_effort_of("sim/other") is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("deciderRepetitions", 6),
        ("deciderRepetitions", 0),
        ("classifierRepetitions", 6),
        ("minAccuracy", 1.01),
        ("minAccuracy", -0.1),
        ("switchCostFactor", 0.5),
        ("maxConcurrency", 0),
        ("maxConcurrency", 65),
        ("classifierMaxP95LatencyMs", 0),
        ("acceptance", "median"),
        ("benchmarkIdentity", "has space"),
    ],
)
def test_out_of_range_values_name_their_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as exc:
        BenchmarkConfig.model_validate({**MINIMAL, field: value})
    assert _error_locs(exc.value) == [(field,)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("deciderRepetitions", 5),
        ("classifierRepetitions", 5),
        ("minAccuracy", 0.0),
        ("minAccuracy", 1.0),
        ("switchCostFactor", 1.0),
        ("classifierMaxP95LatencyMs", None),
        ("acceptance", "lower_bound"),
        ("benchmarkIdentity", "sim-benchmark"),
    ],
)
def test_edge_values_accepted(field: str, value: object) -> None:
    assert getattr(BenchmarkConfig.model_validate({**MINIMAL, field: value}), field) == value


def test_model_lists_must_be_non_empty() -> None:
    with pytest.raises(ValidationError) as exc:
        BenchmarkConfig.model_validate({**MINIMAL, "classifierModels": [], "deciderModels": []})
    assert sorted(_error_locs(exc.value)) == [("classifierModels",), ("deciderModels",)]


def test_invalid_and_duplicate_model_ids() -> None:
    with pytest.raises(ValidationError, match="invalid model id"):
        BenchmarkConfig.model_validate({**MINIMAL, "classifierModels": ["no-slash"]})
    with pytest.raises(ValidationError, match="duplicate classifier model"):
        BenchmarkConfig.model_validate({**MINIMAL, "classifierModels": ["a/b", "a/b"]})
    with pytest.raises(ValidationError, match="duplicate model"):
        BenchmarkConfig.model_validate(
            {**MINIMAL, "deciderModels": [{"model": "a/b"}, {"model": "a/b"}]}
        )
    with pytest.raises(ValidationError) as exc:
        BenchmarkConfig.model_validate(
            {**MINIMAL, "deciderModels": [{"model": "a/b", "reasoningEffort": "max"}]}
        )
    # pydantic also reports the emptied tuple's length; the precise path comes first.
    assert _error_locs(exc.value)[0] == ("deciderModels", 0, "reasoningEffort")


def test_unknown_field_and_immutability() -> None:
    with pytest.raises(ValidationError) as exc:
        BenchmarkConfig.model_validate({**MINIMAL, "minAcuracy": 0.5})
    assert _error_locs(exc.value) == [("minAcuracy",)]
    c = BenchmarkConfig.model_validate(MINIMAL)
    with pytest.raises(ValidationError):
        c.minAccuracy = 0.1  # type: ignore[misc]


def _candidate() -> RoutingCandidate:
    return RoutingCandidate(
        model="sim/swift-mini",
        reasoningEffort="low",
        accuracy=0.9,
        accuracyLowerBound=0.8,
        avgCostUsd=0.001,
        graded=20,
        meetsThreshold=True,
    )


def test_routing_table_with_every_tier() -> None:
    t = RoutingTable(
        version="run-1",
        published_at="2026-06-11T09:30:00.000Z",
        minAccuracy=0.7,
        switchCostFactor=3.0,
        tiers={tier: (_candidate(),) for tier in ("low", "medium", "high")},
    )
    assert set(t.tiers) == {"low", "medium", "high"}


@pytest.mark.parametrize("empty", ["low", "medium", "high"])
def test_routing_table_rejects_an_empty_or_missing_tier(empty: str) -> None:
    tiers: dict[str, Any] = {tier: (_candidate(),) for tier in ("low", "medium", "high")}
    for value in ((), None):
        broken = (
            {**tiers, empty: value}
            if value is not None
            else {k: v for k, v in tiers.items() if k != empty}
        )
        with pytest.raises(ValidationError, match=f"tier '{empty}' has no candidate"):
            RoutingTable.model_validate(
                {
                    "version": "run-1",
                    "published_at": "2026-06-11T09:30:00.000Z",
                    "minAccuracy": 0.7,
                    "switchCostFactor": 3.0,
                    "tiers": broken,
                }
            )


def test_benchmark_identity_that_looks_like_a_key_is_refused_without_echoing_it() -> None:
    import pytest
    from pydantic import ValidationError

    from contracts.config import BenchmarkConfig

    key = "sk-or-v1-0123456789abcdef0123456789abcdef"
    with pytest.raises(ValidationError) as info:
        BenchmarkConfig(
            classifierModels=("sim/tiny",),
            deciderModels=({"model": "sim/tiny"},),  # type: ignore[arg-type]
            benchmarkIdentity=key,
        )
    errors = info.value.errors(include_input=False, include_url=False)
    assert errors[0]["loc"] == ("benchmarkIdentity",)
    assert key not in str(errors)
    ok = BenchmarkConfig(
        classifierModels=("sim/tiny",),
        deciderModels=({"model": "sim/tiny"},),  # type: ignore[arg-type]
        benchmarkIdentity="sim-benchmark",
    )
    assert ok.benchmarkIdentity == "sim-benchmark"
