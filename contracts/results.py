"""Graded case results and the per-(run, model, tier) summaries folded from them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from contracts.config import HarnessName
from contracts.taxonomy import Tier


class CaseOutcome(BaseModel):
    """One graded (run, model, case, repetition): the input of every summary."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    case_id: str
    rep: int = Field(ge=0)
    tier: Tier
    """The case's tier (decider: its label; classifier: the label's derived tier)."""
    score: float = Field(ge=0.0, le=1.0)
    latency_ms: float = Field(ge=0.0)
    cost_usd: float | None = Field(default=None, ge=0.0)
    """None when the provider reported no cost signal."""
    timed_out: bool = False
    post_check_ms: float | None = Field(default=None, ge=0.0)
    """Decider: what the hidden post-check took after the case (grading work in the job's
    container, apart from latency_ms); None when none ran. Pacing counts it as the case's."""


class ModelSummary(BaseModel):
    """Aggregates of one model's graded cases in one tier of one run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    tier: Tier
    accuracy: float = Field(ge=0.0, le=1.0)
    """Mean score over graded cases."""
    accuracy_lower_bound: float = Field(ge=0.0, le=1.0)
    """Wilson lower bound of the accuracy at the summary's confidence."""
    graded: int = Field(ge=0)
    """Number of graded (case, repetition) results."""
    avg_cost_usd: float | None = Field(default=None, ge=0.0)
    """Average cost per graded case; None when no result carried a cost."""
    p95_latency_ms: float | None = Field(default=None, ge=0.0)
    """Nearest-rank p95 latency."""
    timeouts: int = Field(default=0, ge=0)
    carried: bool = False
    """True when copied from an earlier run instead of measured in this one."""
    source_run_id: str | None = None
    """For carried summaries: the run that measured them."""
    harness: HarnessName | None = None
    """Decider summaries: the agent harness that measured them (None for classifier runs
    and for decider summaries recorded before harnesses were named: builtin)."""
