"""The decision event: one per /decide answer, for billing and analysis."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from contracts.envelope import EventBase, NonEmptyStr
from contracts.taxonomy import ReasoningEffort, Tier

ClassifierOutcome = Literal["ok", "fallback", "timeout", "error", "cached", "not_called"]
"""What happened to the request's classifier call. `timeout` and `error` were attempted and
may have been billed by the provider; `cached` and `not_called` cost nothing."""


class DecisionMade(EventBase):
    """/decide answered: a model, or a null decision with the reason."""

    type: Literal["DecisionMade"] = "DecisionMade"
    """Discriminator."""
    schema_version: Literal[1] = 1
    """Payload version."""
    decision_id: NonEmptyStr
    """Id of the decision, as returned to the gateway. Idempotency key: the decide service
    re-sends an undelivered event with the same id, and consumers keep the first one."""
    user_id: str | None = None
    """The gateway's user (request hint `user_id`) the classifier cost is billed to; None
    when the gateway did not say."""
    conversation_id: NonEmptyStr
    """The gateway's conversation (the stickiness key)."""
    model: str | None
    """The chosen model; None for a null decision."""
    reasoning_effort: ReasoningEffort | None
    """The chosen model's pinned effort; None for a null decision."""
    tier: Tier | None
    """Difficulty tier of the request; None when classification failed entirely."""
    sticky: bool
    """True when the conversation's incumbent was kept over a different, cheaper fresh pick
    (an incumbent that is the fresh pick, or costs no more, is not sticky)."""
    null_reason: str | None
    """Why no model was chosen (no table, classifier failure, timeout); None otherwise."""
    classifier_model: NonEmptyStr
    """The classifier model used (override, winner or built-in default)."""
    classifier_cost_usd: float | None = Field(ge=0.0)
    """Cost of the classifier call, billed to the user; None when cached, not reported, or
    the call was abandoned at the deadline (its cost is then unknown)."""
    classifier_outcome: ClassifierOutcome = "not_called"
    """Whether the classifier was called and how it ended; `timeout` and `error` are
    attempted calls (billable), whatever `classifier_cost_usd` says."""
    classification_fallback: bool
    """True when the classification came from the keyword heuristic."""
    table_version: str | None
    """Version (run id) of the routing table used; None when there was none."""
    latency_ms: float = Field(ge=0.0)
    """Time /decide spent on this answer."""

    @model_validator(mode="after")
    def _null_or_model(self) -> DecisionMade:
        if (self.model is None) == (self.null_reason is None):
            raise ValueError("exactly one of model and null_reason must be set")
        if self.model is None and (self.reasoning_effort is not None or self.sticky):
            raise ValueError("a null decision has no reasoning_effort and is not sticky")
        return self
