"""A classification of one request: seven fields, plus whether it came from the fallback."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator

from contracts.taxonomy import ExecutionMode, Level, SubtaskType, TaskType, subtype_belongs


class Classification(BaseModel):
    """What a request is, as the classifier (or the keyword fallback) sees it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    taskType: TaskType
    """One of the six task types."""
    subtaskType: SubtaskType
    """One of the three subtypes of `taskType`."""
    reasoningComplexity: Level
    """How hard the problem is to think through."""
    contextComplexity: Level
    """How much context must be held to answer."""
    executionMode: ExecutionMode
    """single_turn answer, multi_step work, or autonomous agentic work."""
    requiresTools: bool
    """Whether answering needs tools (files, shell, search)."""
    riskLevel: Level
    """How costly a wrong answer is."""
    fallback: bool = False
    """True when produced by the keyword heuristic, not by the model."""
    fallback_reason: str | None = None
    """Why the heuristic was used (unparseable output, missing field, ...)."""

    @model_validator(mode="after")
    def _subtype_of_task(self) -> Classification:
        if not subtype_belongs(self.taskType, self.subtaskType):
            raise ValueError(
                f"subtaskType {self.subtaskType!r} does not belong to taskType {self.taskType!r}"
            )
        if self.fallback and not self.fallback_reason:
            raise ValueError("a fallback classification needs a fallback_reason")
        return self


CLASSIFICATION_FIELDS: tuple[str, ...] = (
    "taskType",
    "subtaskType",
    "reasoningComplexity",
    "contextComplexity",
    "executionMode",
    "requiresTools",
    "riskLevel",
)
