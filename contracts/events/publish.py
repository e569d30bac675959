"""Publish events: a routing table published or skipped, a classifier winner published."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from contracts.envelope import EventBase, NonEmptyStr
from contracts.routing_table import ClassifierWinner, RoutingTable
from contracts.taxonomy import Tier


class RoutingTablePublished(EventBase):
    """A decider run published a routing table; it is the live table from now on."""

    type: Literal["RoutingTablePublished"] = "RoutingTablePublished"
    """Discriminator."""
    schema_version: Literal[1] = 1
    """Payload version."""
    run_id: NonEmptyStr
    """The decider run that built it."""
    table: RoutingTable
    """The table; its `version` is `run_id`."""

    @model_validator(mode="after")
    def _version_is_run(self) -> RoutingTablePublished:
        if self.table.version != self.run_id:
            raise ValueError(f"table.version {self.table.version!r} != run_id {self.run_id!r}")
        return self


class RoutingTablePublishSkipped(EventBase):
    """A decider run did not publish (a tier had no candidate); the previous table stays live."""

    type: Literal["RoutingTablePublishSkipped"] = "RoutingTablePublishSkipped"
    """Discriminator."""
    schema_version: Literal[1] = 1
    """Payload version."""
    run_id: NonEmptyStr
    """The decider run."""
    empty_tiers: tuple[Tier, ...]
    """Tiers left without a candidate (may be empty when `reason` is something else)."""
    reason: str = Field(min_length=1)
    """Why publishing was skipped."""


class ClassifierWinnerPublished(EventBase):
    """A classifier run chose its winner; /decide uses it unless an override is set."""

    type: Literal["ClassifierWinnerPublished"] = "ClassifierWinnerPublished"
    """Discriminator."""
    schema_version: Literal[1] = 1
    """Payload version."""
    run_id: NonEmptyStr
    """The classifier run."""
    winner: ClassifierWinner
    """The winner and the rule that chose it."""

    @model_validator(mode="after")
    def _winner_of_run(self) -> ClassifierWinnerPublished:
        if self.winner.run_id != self.run_id:
            raise ValueError(f"winner.run_id {self.winner.run_id!r} != run_id {self.run_id!r}")
        return self
