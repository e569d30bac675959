"""Case-level events: a graded case, a dead-lettered job, a model's summary."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from contracts.classification import Classification
from contracts.config import RunKind
from contracts.envelope import EventBase, NonEmptyStr
from contracts.ids import case_result_id
from contracts.results import CaseOutcome, ModelSummary
from contracts.taxonomy import Tier

ANSWER_EXCERPT_MAX = 2000
"""Longest answer excerpt kept on a graded case."""
DIAGNOSTIC_KEY_MAX = 64
DIAGNOSTIC_VALUE_MAX = 500
# Diagnostics are for a human reading one case; full outputs belong in logs, not the event log.


class CaseGraded(EventBase):
    """One (run, model, case, repetition) was executed and graded.

    Its `event_id` is `case_result_id(run_id, model, case_id, rep)`, so a retried job that
    grades the same case again produces the same id and the duplicate dedupes itself.
    """

    type: Literal["CaseGraded"] = "CaseGraded"
    """Discriminator."""
    schema_version: Literal[1] = 1
    """Payload version."""
    run_id: NonEmptyStr
    """The run."""
    kind: RunKind
    """classifier or decider benchmark."""
    model: NonEmptyStr
    """The model that answered."""
    case_id: NonEmptyStr
    """The dataset case."""
    rep: int = Field(ge=0)
    """Repetition index, from 0."""
    tier: Tier
    """The case's tier (decider: its label; classifier: the tier derived from the label)."""
    score: float = Field(ge=0.0, le=1.0)
    """Weighted score in [0, 1]; 0 for a fallback classification, a timeout or a wrong answer."""
    latency_ms: float = Field(ge=0.0)
    """Wall time of the model call (classifier) or the case run (decider)."""
    cost_usd: float | None = Field(ge=0.0)
    """Provider-reported cost (retries summed); None when there was no cost signal."""
    timed_out: bool
    """True when the case hit its timeout and was killed."""
    classification: Classification | None = None
    """The parsed (or fallback) classification; classifier runs only."""
    answer_excerpt: str | None = Field(default=None, max_length=ANSWER_EXCERPT_MAX)
    """Start of the model's final answer, for diagnosis."""
    diagnostics: dict[
        Annotated[str, Field(min_length=1, max_length=DIAGNOSTIC_KEY_MAX)],
        Annotated[str, Field(max_length=DIAGNOSTIC_VALUE_MAX)],
    ] = Field(default_factory=dict)
    """Short facts about the execution: exit code, stop reason, fallback reason, ..."""
    job_id: NonEmptyStr
    """The case job that ran it (`run:model:chunk:rep`)."""

    @field_validator("diagnostics")
    @classmethod
    def _few_diagnostics(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > 32:
            raise ValueError("at most 32 diagnostics")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> CaseGraded:
        expected = case_result_id(self.run_id, self.model, self.case_id, self.rep)
        if self.event_id != expected:
            raise ValueError(
                f"event_id must be case_result_id(run_id, model, case_id, rep) = {expected}"
            )
        if self.kind == "decider" and self.classification is not None:
            raise ValueError("decider results carry no classification")
        return self

    def to_outcome(self) -> CaseOutcome:
        """The summary input of this result."""
        return CaseOutcome(
            model=self.model,
            case_id=self.case_id,
            rep=self.rep,
            tier=self.tier,
            score=self.score,
            latency_ms=self.latency_ms,
            cost_usd=self.cost_usd,
            timed_out=self.timed_out,
            post_check_ms=_post_check_ms(self.diagnostics),
        )


def _post_check_ms(diagnostics: dict[str, str]) -> float | None:
    """The executor's `post_check_ms` diagnostic (ms, as text), when there is a sane one."""
    try:
        ms = float(diagnostics.get("post_check_ms") or "nan")
    except ValueError:
        return None
    return ms if 0.0 <= ms < float("inf") else None


class CaseJobDeadLettered(EventBase):
    """A case job failed after its retries; its cases stay ungraded and the run goes on."""

    type: Literal["CaseJobDeadLettered"] = "CaseJobDeadLettered"
    """Discriminator."""
    schema_version: Literal[1] = 1
    """Payload version."""
    run_id: NonEmptyStr
    """The run."""
    job_id: NonEmptyStr
    """The failed job (`run:model:chunk:rep`)."""
    model: NonEmptyStr
    """The job's model."""
    case_ids: tuple[str, ...] = Field(min_length=1)
    """The job's cases, none of which was graded by it."""
    rep: int = Field(ge=0)
    """The job's repetition index."""
    attempts: int = Field(ge=1)
    """How many times the job was tried (first try plus retries)."""
    error: str = Field(min_length=1, max_length=2000)
    """The last attempt's error, shortened."""


class ModelSummarized(EventBase):
    """A model's aggregates in one tier of a run (measured, or carried from an earlier run)."""

    type: Literal["ModelSummarized"] = "ModelSummarized"
    """Discriminator."""
    schema_version: Literal[1] = 1
    """Payload version."""
    run_id: NonEmptyStr
    """The run the summary belongs to."""
    summary: ModelSummary
    """The summary."""
