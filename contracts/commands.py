"""Commands: imperative requests an admin puts on the command topic.

A command is a wish, not a fact: the worker decides it and answers with events
(`CommandAccepted` plus the facts, or `CommandRejected` with the reason).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field

from contracts.config import MODEL_ID_PATTERN, BenchmarkConfig, RunKind
from contracts.envelope import CommandBase


class SaveBenchmarkConfig(CommandBase):
    """Replace the live benchmark config; later runs snapshot it when they start."""

    type: Literal["SaveBenchmarkConfig"] = "SaveBenchmarkConfig"
    """Discriminator."""
    schema_version: Literal[1] = 1
    """Payload version."""
    config: BenchmarkConfig
    """The complete new config (not a patch)."""


class StartRun(CommandBase):
    """Start a benchmark run of one kind over the saved config."""

    type: Literal["StartRun"] = "StartRun"
    """Discriminator."""
    schema_version: Literal[1] = 1
    """Payload version."""
    kind: RunKind
    """classifier or decider benchmark."""
    force: bool = False
    """Re-run every model instead of carrying earlier summaries forward."""


class SetClassifierOverride(CommandBase):
    """Pin the classifier model /decide uses, ahead of the benchmark winner."""

    type: Literal["SetClassifierOverride"] = "SetClassifierOverride"
    """Discriminator."""
    schema_version: Literal[1] = 1
    """Payload version."""
    model: Annotated[str, Field(pattern=MODEL_ID_PATTERN, max_length=200)] | None
    """The model to pin; None clears the override (the winner applies again)."""


Command = Annotated[
    SaveBenchmarkConfig | StartRun | SetClassifierOverride,
    Field(discriminator="type"),
]
"""Every command, discriminated by `type`."""

CommandType = Literal["SaveBenchmarkConfig", "StartRun", "SetClassifierOverride"]
"""The `type` tag of a command."""

COMMAND_CLASSES: Final[dict[str, type[CommandBase]]] = {
    cls.model_fields["type"].default: cls
    for cls in (SaveBenchmarkConfig, StartRun, SetClassifierOverride)
}
"""Command class by type tag."""
