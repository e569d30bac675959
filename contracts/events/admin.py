"""Events answering admin commands: config saved, override set, command accepted/rejected."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contracts.commands import CommandType
from contracts.config import BenchmarkConfig
from contracts.envelope import EventBase

RAW_EXCERPT_MAX = 500
"""Longest excerpt of a rejected command's raw bytes kept in the log."""


class BenchmarkConfigSaved(EventBase):
    """An admin saved a new benchmark config; it is the live config from now on."""

    type: Literal["BenchmarkConfigSaved"] = "BenchmarkConfigSaved"
    """Discriminator."""
    schema_version: Literal[1] = 1
    """Payload version."""
    config: BenchmarkConfig
    """The complete config as saved."""


class CommandAccepted(EventBase):
    """A command passed validation and its preconditions; its facts follow."""

    type: Literal["CommandAccepted"] = "CommandAccepted"
    """Discriminator."""
    schema_version: Literal[1] = 1
    """Payload version."""
    command_type: CommandType
    """Type of the accepted command (its id is the event's `correlation_id`)."""


class CommandRejected(EventBase):
    """A command was refused: not JSON, unknown type, invalid fields or a precondition unmet."""

    type: Literal["CommandRejected"] = "CommandRejected"
    """Discriminator."""
    schema_version: Literal[1] = 1
    """Payload version."""
    command_type: str | None
    """The command's `type` tag if one could be read, else None."""
    reason: str = Field(min_length=1)
    """What was wrong, precise enough to fix the command (names the field where one is)."""
    raw_excerpt: str | None = Field(default=None, max_length=RAW_EXCERPT_MAX)
    """Start of the raw message bytes (decoded leniently) when it could not be decoded."""


class ClassifierOverrideSet(EventBase):
    """The admin pinned (or cleared) the classifier model /decide uses."""

    type: Literal["ClassifierOverrideSet"] = "ClassifierOverrideSet"
    """Discriminator."""
    schema_version: Literal[1] = 1
    """Payload version."""
    model: str | None
    """The pinned model; None means cleared, so the benchmark winner applies again."""


def raw_excerpt(raw: bytes, limit: int = RAW_EXCERPT_MAX) -> str:
    """The first `limit` characters of `raw`, invalid UTF-8 replaced, for `CommandRejected`."""
    return raw.decode("utf-8", errors="replace")[:limit]
