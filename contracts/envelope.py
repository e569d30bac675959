"""The envelope every event and every command carries, and the UTC timestamp type.

The clock is never read here: timestamps and ids are passed in by the shell, so re-deciding
the same input yields byte-identical messages.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _check_utc(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as e:
        raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from e
    if parsed.utcoffset() != timedelta(0):
        raise ValueError(f"timestamp must be UTC (Z or +00:00): {value!r}")
    # Kept as the original string: re-encoding must give back the same bytes.
    return value


UtcTimestamp = Annotated[str, AfterValidator(_check_utc)]
"""An ISO-8601 timestamp with an explicit UTC offset, e.g. `2026-06-11T09:30:00.000Z`."""


def iso_utc(moment: datetime) -> str:
    """Format an aware datetime as the canonical `YYYY-MM-DDTHH:MM:SS.mmmZ` UTC string."""
    if moment.tzinfo is None:
        raise ValueError("iso_utc needs an aware datetime")
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


NonEmptyStr = Annotated[str, Field(min_length=1)]


class EventBase(BaseModel):
    """Envelope of every domain event. Subclasses narrow `type` and `schema_version`."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True
    )

    event_id: NonEmptyStr
    """Unique id; derived (uuid5) wherever a retry could re-create the same fact."""
    type: str
    """The event's class name, the discriminator of the `Event` union."""
    schema_version: int
    """Version of this event's payload shape; older payloads are upcast on decode."""
    occurred_at: UtcTimestamp
    """When the fact happened (ISO-8601 UTC), passed in by the shell, never defaulted."""
    correlation_id: str | None = None
    """Id of the command this event ultimately answers, if any."""
    causation_id: str | None = None
    """Id of the message (event or command) that directly caused this event, if any."""


class CommandBase(BaseModel):
    """Envelope of every command. Subclasses narrow `type` and `schema_version`."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True
    )

    command_id: NonEmptyStr
    """Unique id chosen by the issuer; events it causes carry it as `correlation_id`."""
    type: str
    """The command's class name, the discriminator of the `Command` union."""
    schema_version: int
    """Version of this command's payload shape; older payloads are upcast on decode."""
    issued_at: UtcTimestamp
    """When the issuer sent it (ISO-8601 UTC)."""
