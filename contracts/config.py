"""The benchmark configuration an admin saves; a run snapshots it when it starts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contracts.local_classifier import is_local
from contracts.taxonomy import ReasoningEffort

Acceptance = Literal["point", "lower_bound"]
RunKind = Literal["classifier", "decider"]
HarnessName = Literal["builtin", "kilo", "mini-swe-agent"]
"""Who drives a decider case: the built-in tool loop in the worker, or a real agent CLI
(the Kilo CLI, mini-swe-agent) inside the job's container. Part of what a run measures."""
HARNESSES: tuple[HarnessName, ...] = ("builtin", "kilo", "mini-swe-agent")

MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]*(/[A-Za-z0-9._:\-]+)+$"


class DeciderModel(BaseModel):
    """A decider candidate, benchmarked and served at one pinned reasoning effort."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(pattern=MODEL_ID_PATTERN, max_length=200)
    """Provider model id, e.g. `sim/swift-mini` or `openai/gpt-5-mini`."""
    reasoningEffort: ReasoningEffort = "medium"
    """Sent as OpenRouter's `reasoning: {effort}` both when benchmarking and when serving."""


class BenchmarkConfig(BaseModel):
    """Every knob of a benchmark run. There is no default config: runs need a saved one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    classifierModels: tuple[str, ...] = Field(min_length=1, max_length=50)
    """Candidate classifier model ids."""
    deciderModels: tuple[DeciderModel, ...] = Field(min_length=1, max_length=50)
    """Candidate decider models, each with its pinned reasoning effort."""
    minAccuracy: float = Field(default=0.7, ge=0.0, le=1.0)
    """Accuracy a model must reach to be 'above threshold'."""
    switchCostFactor: float = Field(default=3.0, ge=1.0, le=100.0)
    """An incumbent is kept while it costs at most this many times the fresh pick."""
    maxConcurrency: int = Field(default=4, ge=1, le=64)
    """Upper bound on a run's concurrently executing case jobs."""
    classifierRepetitions: int = Field(default=1, ge=1, le=5)
    """How often each classifier case is replayed per model."""
    deciderRepetitions: int = Field(default=1, ge=1, le=5)
    """How often each decider case is run per model."""
    classifierMaxP95LatencyMs: int | None = Field(default=1000, ge=1, le=600_000)
    """Optional p95 latency budget for the classifier winner; null means no constraint."""
    acceptance: Acceptance = "point"
    """`point`: accuracy >= minAccuracy; `lower_bound`: its Wilson lower bound must clear it."""
    deciderHarness: HarnessName = "builtin"
    """The agent harness decider cases run through; results measured through another
    harness are another measurement (never carried across harnesses)."""
    benchmarkIdentity: str | None = Field(
        default=None, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$"
    )
    """Name of the provider credential decider runs use and are billed to (the secret itself
    lives in settings, never in config or events). Decider runs are refused without one."""

    @field_validator("benchmarkIdentity")
    @classmethod
    def _identity_is_a_name(cls, v: str | None) -> str | None:
        # A pasted API key here would be stored forever on the event log: refuse it without
        # echoing it back.
        if v is not None and v.lower().startswith(("sk-", "sk_", "key-", "bearer")):
            raise ValueError(
                "benchmarkIdentity must name a credential configured in settings "
                "(PROVENROUTE_PROVIDER_CREDENTIALS), not be a key itself"
            )
        return v

    @field_validator("classifierModels")
    @classmethod
    def _classifier_ids(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        import re

        for m in v:
            if not re.match(MODEL_ID_PATTERN, m):
                raise ValueError(f"invalid model id {m!r}")
        if len(set(v)) != len(v):
            raise ValueError("duplicate classifier model")
        return v

    @model_validator(mode="after")
    def _unique_deciders(self) -> BenchmarkConfig:
        ids = [d.model for d in self.deciderModels]
        if len(set(ids)) != len(ids):
            raise ValueError("deciderModels: duplicate model")
        if any(is_local(m) for m in ids):
            raise ValueError("deciderModels: local classifiers cannot be decider models")
        return self

    def reasoning_effort_of(self, model: str) -> ReasoningEffort | None:
        for d in self.deciderModels:
            if d.model == model:
                return d.reasoningEffort
        return None
