"""Run lifecycle events: started, models enqueued or carried, jobs fanned out, completed."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.config import BenchmarkConfig, RunKind
from contracts.envelope import EventBase, NonEmptyStr
from contracts.results import ModelSummary
from contracts.taxonomy import ReasoningEffort


class MeasurementConditions(BaseModel):
    """What a run's numbers were measured against, so a service using them can tell whether
    it calls the same thing."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    provider_base_url: str
    """The provider endpoint the worker called."""
    simulated_latency_scale: float | None = None
    """The simulated provider's latency scale, from its answer headers; None for a real
    provider (or when it did not say)."""
    classifier_deadline_ms: int = Field(ge=1)
    """/decide's classifier deadline (budget minus margin), which every classifier call was
    measured against and the winner's p95 must fit."""


def conditions_differ(measured: MeasurementConditions, serving: MeasurementConditions) -> list[str]:
    """How the conditions a run measured under differ from a service's own, in words."""
    out = []
    if measured.provider_base_url.rstrip("/") != serving.provider_base_url.rstrip("/"):
        out.append(
            f"provider {measured.provider_base_url} (measured) vs {serving.provider_base_url}"
        )
    if measured.simulated_latency_scale != serving.simulated_latency_scale:
        out.append(
            f"simulated latency scale {measured.simulated_latency_scale} (measured) vs "
            f"{serving.simulated_latency_scale}"
        )
    if measured.classifier_deadline_ms != serving.classifier_deadline_ms:
        out.append(
            f"classifier deadline {measured.classifier_deadline_ms} ms (measured) vs "
            f"{serving.classifier_deadline_ms} ms"
        )
    return out


class RunStarted(EventBase):
    """A benchmark run started; everything downstream reads its config snapshot."""

    type: Literal["RunStarted"] = "RunStarted"
    """Discriminator."""
    schema_version: Literal[1] = 1
    """Payload version."""
    run_id: NonEmptyStr
    """The run's id (also the key that keeps its events ordered)."""
    kind: RunKind
    """classifier or decider benchmark."""
    force: bool
    """True when every model is re-run instead of carrying earlier summaries."""
    config: BenchmarkConfig
    """Snapshot of the live config when the run started; never re-read from live config."""
    dataset_size: int = Field(ge=1)
    """Number of cases in the run's dataset (per model and repetition)."""
    conditions: MeasurementConditions | None = None
    """The provider and deadline the run measured under (None in runs from before)."""
    dataset_hash: str | None = None
    """Content hash of the run's dataset (`contracts.cases.dataset_hash`); with the
    repetition count it decides which earlier summaries may be carried."""


class RunModelEnqueued(EventBase):
    """A model will be measured in this run (its case jobs are fanned out)."""

    type: Literal["RunModelEnqueued"] = "RunModelEnqueued"
    """Discriminator."""
    schema_version: Literal[1] = 1
    """Payload version."""
    run_id: NonEmptyStr
    """The run."""
    model: NonEmptyStr
    """The candidate model id."""
    reasoning_effort: ReasoningEffort | None
    """Pinned effort of a decider model; None in classifier runs."""


class RunModelCarried(EventBase):
    """A model is not re-run: its latest summaries are copied into this run."""

    type: Literal["RunModelCarried"] = "RunModelCarried"
    """Discriminator."""
    schema_version: Literal[1] = 1
    """Payload version."""
    run_id: NonEmptyStr
    """The run the summaries are carried into."""
    model: NonEmptyStr
    """The carried model id."""
    reasoning_effort: ReasoningEffort | None
    """Pinned effort of a decider model; None in classifier runs."""
    source_run_id: NonEmptyStr
    """The run that measured the summaries."""
    summaries: tuple[ModelSummary, ...] = Field(min_length=1)
    """The carried summaries, one per tier measured, each with `carried=True`."""

    @model_validator(mode="after")
    def _summaries_match(self) -> RunModelCarried:
        for s in self.summaries:
            if s.model != self.model:
                raise ValueError(f"summary of {s.model!r} carried under model {self.model!r}")
            if not s.carried:
                raise ValueError("carried summaries must have carried=true")
        return self


class CaseJobsFannedOut(EventBase):
    """All case jobs of the run are on the job topic; states how many results to expect."""

    type: Literal["CaseJobsFannedOut"] = "CaseJobsFannedOut"
    """Discriminator."""
    schema_version: Literal[1] = 1
    """Payload version."""
    run_id: NonEmptyStr
    """The run."""
    jobs: int = Field(ge=0)
    """Number of case-job messages sent (0 when every model was carried)."""
    expected_results: int = Field(ge=0)
    """Number of (model, case, rep) results that complete the run: the completion rule is
    `len(seen) == expected_results`, never a timeout."""

    @model_validator(mode="after")
    def _at_least_one_case_per_job(self) -> CaseJobsFannedOut:
        if self.expected_results < self.jobs:
            raise ValueError("expected_results cannot be below jobs (a job holds >= 1 case)")
        return self


class RunCompleted(EventBase):
    """Every expected result is in: graded, or ungraded because its job was dead-lettered.

    The run ended either way; `status` says whether it measured what it set out to. A run
    that lost all (or more than the configured share) of its results to dead-lettered jobs
    is `failed`: it publishes nothing and names the reason."""

    type: Literal["RunCompleted"] = "RunCompleted"
    """Discriminator."""
    schema_version: Literal[1] = 1
    """Payload version."""
    run_id: NonEmptyStr
    """The run."""
    kind: RunKind
    """classifier or decider benchmark."""
    graded: int = Field(ge=0)
    """Distinct (model, case, rep) results graded."""
    ungraded: int = Field(ge=0)
    """Expected results lost to dead-lettered jobs."""
    expected: int = Field(ge=0)
    """`expected_results` of the run's fan-out."""
    status: Literal["completed", "failed"] = "completed"
    """`failed` when the run measured nothing, or too little to stand on."""
    failure_reason: str | None = Field(default=None, max_length=2000)
    """Why a failed run failed (how much was lost, and the last job error); None otherwise."""

    @model_validator(mode="after")
    def _adds_up(self) -> RunCompleted:
        if self.graded + self.ungraded != self.expected:
            raise ValueError(
                f"graded {self.graded} + ungraded {self.ungraded} != expected {self.expected}"
            )
        if (self.status == "failed") != (self.failure_reason is not None):
            raise ValueError("a failed run, and only a failed run, has a failure_reason")
        return self
