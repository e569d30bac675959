"""Domain events: past-tense facts, one small module per concern, one discriminated union."""

from __future__ import annotations

from typing import Annotated, Final, get_args

from pydantic import Field

from contracts.envelope import EventBase
from contracts.events.admin import (
    RAW_EXCERPT_MAX,
    BenchmarkConfigSaved,
    ClassifierOverrideSet,
    CommandAccepted,
    CommandRejected,
    raw_excerpt,
)
from contracts.events.cases import CaseGraded, CaseJobDeadLettered, ModelSummarized
from contracts.events.decisions import DecisionMade
from contracts.events.publish import (
    ClassifierWinnerPublished,
    RoutingTablePublished,
    RoutingTablePublishSkipped,
)
from contracts.events.runs import (
    CaseJobsFannedOut,
    RunCompleted,
    RunModelCarried,
    RunModelEnqueued,
    RunStarted,
)

Event = Annotated[
    BenchmarkConfigSaved
    | CommandAccepted
    | CommandRejected
    | ClassifierOverrideSet
    | RunStarted
    | RunModelEnqueued
    | RunModelCarried
    | CaseJobsFannedOut
    | CaseGraded
    | CaseJobDeadLettered
    | ModelSummarized
    | RunCompleted
    | RoutingTablePublished
    | RoutingTablePublishSkipped
    | ClassifierWinnerPublished
    | DecisionMade,
    Field(discriminator="type"),
]
"""Every domain event, discriminated by `type`."""

EVENT_CLASSES: Final[dict[str, type[EventBase]]] = {
    cls.model_fields["type"].default: cls for cls in get_args(get_args(Event)[0])
}
"""Event class by type tag, read off the `Event` union so the list is written once."""

__all__ = [
    "EVENT_CLASSES",
    "RAW_EXCERPT_MAX",
    "BenchmarkConfigSaved",
    "CaseGraded",
    "CaseJobDeadLettered",
    "CaseJobsFannedOut",
    "ClassifierOverrideSet",
    "ClassifierWinnerPublished",
    "CommandAccepted",
    "CommandRejected",
    "DecisionMade",
    "Event",
    "EventBase",
    "ModelSummarized",
    "RoutingTablePublishSkipped",
    "RoutingTablePublished",
    "RunCompleted",
    "RunModelCarried",
    "RunModelEnqueued",
    "RunStarted",
    "raw_excerpt",
]
