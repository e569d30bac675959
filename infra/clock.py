"""The one wall clock of the services, passed into pure code as a value (never read there)."""

from __future__ import annotations

from datetime import UTC, datetime

from contracts.envelope import iso_utc


def utc_now() -> str:
    """Now, as the envelope's ISO-8601 UTC text."""
    return iso_utc(datetime.now(UTC))
