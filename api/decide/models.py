"""Request and response models of POST /decide (kept apart, as the house style asks)."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from contracts.classification import Classification
from contracts.taxonomy import ReasoningEffort, Tier

MAX_MESSAGES: Final = 2000
MAX_CONVERSATION_ID: Final = 200

NullReason = Literal[
    "no_routing_table",
    "empty_tier",
    "classifier_timeout",
    "classifier_error",
    "sessions_unavailable",
    "internal_error",
]
"""Why a decision is null; the gateway then serves its own default."""


class DecideMessage(BaseModel):
    """One chat message as the gateway forwards it (OpenAI shape; extra keys are ignored)."""

    model_config = ConfigDict(extra="allow")

    role: str = Field(min_length=1, max_length=64)
    content: str | list[dict[str, Any] | str] | None = None
    """Text, a list of content parts, or null (assistant turns that only call tools)."""
    name: str | None = Field(default=None, max_length=256)
    tool_calls: list[dict[str, Any]] | None = None


class DecideHints(BaseModel):
    """Optional context from the gateway; logged with the decision, never changes the pick."""

    model_config = ConfigDict(extra="allow")

    user_id: str | None = Field(default=None, max_length=200)
    requested_model: str | None = Field(default=None, max_length=200)


class DecideRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    conversationId: str = Field(
        min_length=1,
        max_length=MAX_CONVERSATION_ID,
        validation_alias=AliasChoices("conversationId", "conversation_id"),
        description="The gateway's conversation id: the stickiness and cache key.",
    )
    messages: list[DecideMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    hints: DecideHints | None = None


class DecideResponse(BaseModel):
    """A decision, or a null decision (`model` null, `nullReason` set)."""

    decisionId: str
    conversationId: str
    model: str | None
    reasoningEffort: ReasoningEffort | None
    """Serve the model at this pinned effort: the conditions the benchmark measured."""
    tier: Tier | None
    sticky: bool
    """True when the conversation's incumbent was kept over a cheaper fresh pick."""
    classification: Classification | None
    classifierModel: str | None
    classifierSource: Literal["override", "winner", "default"] | None
    classifierCostUsd: float | None
    """Cost of this request's classifier call (bill it to the user); null when cached."""
    classificationCached: bool
    tableVersion: str | None
    nullReason: NullReason | None
    latencyMs: float
